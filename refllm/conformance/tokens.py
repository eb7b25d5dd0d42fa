"""Tokenizer conformance, where the other runtime exposes tokenization (llama.cpp's /tokenize).

The texts are refllm's golden strings (golden/tokens/*.json in a source checkout: whitespace,
code, many scripts, emoji, fuzz), else the prompt suite's texts.
"""

from __future__ import annotations

import json
from pathlib import Path

from refllm.conformance import ConformanceError
from refllm.conformance.remote import Remote

GOLDEN_TOKENS = Path(__file__).resolve().parents[2] / "golden" / "tokens"


def golden_texts(fallback: list[str]) -> list[str]:
    """Every distinct text of the golden token files' plain and fuzz sets (in file order)."""
    texts: dict[str, None] = {}
    for name in ("smollm2.json", "gemma3.json"):
        path = GOLDEN_TOKENS / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            for case in data.get("plain", []) + data.get("fuzz", []):
                texts.setdefault(case["text"])
    return list(texts) or fallback


def check_tokenizer(model, remote: Remote, texts: list[str]) -> dict | None:
    """{"texts", "tokenize_agree", "detokenize_agree", "mismatches"}; None if the server has no /tokenize."""
    try:
        remote.tokenize("probe", add_special=False, parse_special=False)
    except ConformanceError:
        return None
    tokenize_agree = detokenize_agree = 0
    mismatches = []
    for text in texts:
        mine = model.tokenize(text, add_special=True, parse_special=False)
        theirs = answer(lambda: remote.tokenize(text, add_special=True, parse_special=False))
        if mine == theirs:
            tokenize_agree += 1
        elif len(mismatches) < 5:
            mismatches.append({"text": text, "refllm": mine, "other": theirs})
        detokenized = answer(lambda: remote.detokenize(mine))
        if model.detokenize(mine) == detokenized:
            detokenize_agree += 1
        elif len(mismatches) < 5:
            mismatches.append({"text": text, "detokenize_of": mine, "other": detokenized})
    return {"texts": len(texts), "tokenize_agree": tokenize_agree, "detokenize_agree": detokenize_agree,
            "mismatches": mismatches}  # fmt: skip


def answer(ask):
    """The server's answer, or its error as text: refllm's ids may be out of range for another vocabulary
    (a different model behind the endpoint), and one error should not lose the whole report."""
    try:
        return ask()
    except ConformanceError as e:
        return f"error: {e}"
