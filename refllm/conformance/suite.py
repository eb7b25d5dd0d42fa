"""The prompt suite: fixed, versioned raw prompts (``suites/v1.json``).

Prompts are sent without any chat template, so both runtimes see the same tokens. The
``long`` prompt is built at run time from other prompts' texts, repeated until it holds
the asked-for number of tokens (the model's context window at most).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from refllm.errors import InvalidRequest

SUITES_DIR = Path(__file__).parent / "suites"
DEFAULT_SUITE = "v1"


@dataclass
class Prompt:
    id: str
    kind: str  # prose, code, numbers, multilingual, long
    text: str


def load_suite(name: str = DEFAULT_SUITE) -> tuple[str, list[dict]]:
    """(version string, raw prompt entries) of a suite shipped with refllm or a JSON file path."""
    path = Path(name) if name.endswith(".json") else SUITES_DIR / f"{name}.json"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.json")))
        raise InvalidRequest(f"no conformance suite {name!r} (shipped: {shipped}; or give a .json file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version, prompts = str(data["version"]), list(data["prompts"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidRequest(f"{path}: not a conformance suite ({e})") from None
    ids = {p.get("id") for p in prompts if isinstance(p, dict)}
    for i, p in enumerate(prompts):
        if not (isinstance(p, dict) and all(isinstance(p.get(key), str) for key in ("id", "kind", "text"))):
            raise InvalidRequest(f"{path}: prompts[{i}] needs string fields id, kind and text")
        if not set(p.get("fill_from", [])) <= ids:
            raise InvalidRequest(f"{path}: prompts[{i}].fill_from names prompts the suite does not have")
    return version, prompts


def build_prompts(entries: list[dict], tokenize, context_tokens: int, only: list[str] | None = None) -> list[Prompt]:
    """The suite's prompts, with the long one filled to at most ``context_tokens`` tokens.

    ``tokenize(text) -> ids`` counts tokens; ``only`` keeps the listed ids (in suite order).
    """
    by_id = {e["id"]: e for e in entries}
    unknown = [name for name in only or [] if name not in by_id]
    if unknown:
        raise InvalidRequest(f"unknown prompt id(s) {', '.join(unknown)}; the suite has: {', '.join(by_id)}")
    prompts = []
    for entry in entries:
        if only and entry["id"] not in only:
            continue
        text = entry["text"]
        if entry.get("fill_from"):
            text = fill_text([by_id[name]["text"] for name in entry["fill_from"]], tokenize, context_tokens)
        prompts.append(Prompt(entry["id"], entry["kind"], text))
    return prompts


def fill_text(pieces: list[str], tokenize, max_tokens: int) -> str:
    """Paragraphs from ``pieces``, round and round, while the text stays within ``max_tokens`` tokens."""
    overhead = len(tokenize(""))  # BOS, where the model adds one
    sizes = [len(tokenize(piece + "\n\n")) - overhead for piece in pieces]  # each paragraph's tokens, counted once
    chosen, total, i = [], overhead, 0
    while total + sizes[i % len(pieces)] <= max_tokens:
        chosen.append(pieces[i % len(pieces)] + "\n\n")
        total, i = total + sizes[i % len(pieces)], i + 1
    while chosen and len(tokenize("".join(chosen))) > max_tokens:  # merges across paragraph borders
        chosen.pop()
    return "".join(chosen)
