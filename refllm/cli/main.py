"""``refllm`` entry point: builds the argument parser from the command modules and runs one.

Each command module defines ``register(subparsers)``, adding its sub-command(s) with
``set_defaults(func=...)``; ``func(args) -> int`` returns the exit code.
User errors (``RefllmError``, ``GGUFError``) print one line on stderr and exit 1,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from refllm import __version__
from refllm.errors import RefllmError
from refllm.gguf import GGUFError

# Command modules, in the order ``refllm --help`` lists them.
COMMAND_MODULES = [
    "refllm.cli.inspect",
    "refllm.cli.run",
    "refllm.cli.serve",
    "refllm.cli.store",
    "refllm.cli.plan",
    "refllm.cli.ollm",
    "refllm.cli.conformance",
    "refllm.cli.eval",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refllm",
        description="A readable, verified local LLM runtime: GGUF models on NumPy/Numba, Ollama- and OpenAI-style APIs.",
    )
    parser.add_argument("--version", action="version", version=f"refllm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (RefllmError, GGUFError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
