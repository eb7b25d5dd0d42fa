"""``refllm`` entry point: builds the argument parser from the command modules and runs one.

Each command module defines ``register(subparsers)``, adding its sub-command(s) with
``set_defaults(func=...)``; ``func(args) -> int`` returns the exit code.
Prompt words may come after options, as ``ollama run MODEL --think "Why?"`` allows
(``take_prompt_words``); an unknown option is a usage error of its sub-command (exit 2).
User errors (``RefllmError``, ``GGUFError``) print one line on stderr and exit 1,
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
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
    parser.add_argument("-v", "--version", action="version", version=f"refllm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(subparsers)
    parser.command_parsers = subparsers.choices  # name -> sub-command parser (for its usage errors)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line as a Namespace; prompt words keep their order wherever options sit between them."""
    args, leftover = parser.parse_known_args(bare_think_flags(argv))
    if leftover:
        take_prompt_words(parser, args, leftover)
    return args


def bare_think_flags(argv: list[str]) -> list[str]:
    """``refllm run``'s ``--think`` before a word that is no level is a bare flag, ``--think=true``.

    Ollama reads ``ollama run MODEL "A" --think "B"`` as thinking on and the prompt "A B";
    argparse would take "B" as the flag's value and lose its place among the prompt words.
    A level stays the flag's value: ``--think high``, ``--think=false``. Words after "--" are prompt.
    """
    from refllm.cli.run import THINK_VALUES

    if not argv or argv[0] != "run":
        return list(argv)
    words = list(argv)
    for i in range(len(words) - 1):
        if words[i] == "--":
            break
        if words[i] == "--think" and words[i + 1].lower() not in THINK_VALUES and not _looks_like_option(words[i + 1]):
            words[i] = "--think=true"
    return words


def take_prompt_words(parser: argparse.ArgumentParser, args: argparse.Namespace, leftover: list[str]) -> None:
    """Words argparse left over are more of the prompt, for commands that take one.

    argparse fills MODEL and PROMPT from the words before the first option, so in
    ``refllm run smollm2 --verbose "Hi"`` the "Hi" is left over; Ollama's CLI reads it
    as the prompt, and so does refllm. A left-over option (``--bogus``) is a usage error.
    """
    command_parser = parser.command_parsers.get(args.command, parser)
    before, after = _split_at_double_dash(leftover)  # after "--" every word is prompt
    unknown = [word for word in before if _looks_like_option(word)]
    if unknown or not isinstance(getattr(args, "prompt", None), list):
        command_parser.error(f"unrecognized arguments: {' '.join(unknown or leftover)}")
    args.prompt.extend(before + after)


def _split_at_double_dash(words: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in words:
        return words, []
    i = words.index("--")
    return words[:i], words[i + 1:]


def _looks_like_option(word: str) -> bool:
    """True for an option such as --bogus or -x; as for argparse, -5, - and "- a list" are words."""
    return word.startswith("-") and word != "-" and " " not in word and not re.fullmatch(r"-\d+|-\d*\.\d+", word)


def main(argv: list[str] | None = None) -> int:
    for name in ("stdout", "stderr"):  # started with the stream closed (`refllm ... >&-`): write nowhere, not crash
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))
    parser = build_parser()
    args = parse_arguments(parser, sys.argv[1:] if argv is None else argv)
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
