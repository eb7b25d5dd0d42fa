"""``refllm run MODEL [PROMPT]``: answer one prompt, or chat, like ``ollama run``.

    refllm run smollm2 "Why is the sky blue?"          streams the answer and exits
    echo "Summarize:" | refllm run smollm2 "in French"  stdin, then the prompt words (as Ollama joins them)
    refllm run smollm2                                 an interactive chat on a terminal
    refllm run ./model.gguf --verbose -n 64 --seed 1   timings after the answer, 64 tokens, reproducible
    refllm run smollm2 --format json "A cat as JSON"   constrained to JSON (or --format '{JSON schema}')
    refllm run qwen3 --think --hidethinking "2+2?"     a thinking model: reasoning hidden, answer shown

In the chat, lines starting with "/" are commands (type /? for the list) and a message
can span lines between triple quotes (\"\"\"). Ctrl-C stops an answer; Ctrl-D or /bye leaves.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from refllm.errors import InvalidRequest
from refllm.generate import GenerationResult, Session
from refllm.kernels.reference import BACKEND_NAMES
from refllm.sample import Options
from refllm.sample.options import parse_option_text



def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a model: answer a prompt, or chat interactively",
        description="Answer PROMPT (and/or text piped on stdin) with MODEL, or chat with it when no prompt is given.",
        epilog='Options may come before or after the prompt: refllm run smollm2 --verbose "Hi"',
    )
    p.add_argument("model", nargs="?", help="a .gguf path or a model name (default: the config's runtime.model_reference)")
    p.add_argument("prompt", nargs="*", help="the prompt; stdin, when piped, comes first")
    p.add_argument("--verbose", action="store_true", help="print timings (load, prompt eval rate, eval rate) after each answer")
    p.add_argument("--raw", action="store_true", help="give the prompt to the model as is, without the chat template")
    p.add_argument("--system", help="system message")
    p.add_argument("--backend", choices=BACKEND_NAMES,
                   help='compute backend (default: runtime.device\'s: numba for "cpu", cuda for "cuda")')
    add_generation_arguments(p)
    p.add_argument("--format", help='response format: "json" or a JSON schema (constrained decoding)')
    p.add_argument("--think", nargs="?", const="true", metavar="true|false|low|medium|high",
                   help="thinking models: think before answering (the reasoning is printed apart)")
    p.add_argument("--hidethinking", action="store_true", help="thinking models: do not print the reasoning")
    p.add_argument("--plan-json", action="store_true", help="print the resolved runtime plan as JSON and exit without running")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    model_name = args.model or _default_model_name()
    if args.plan_json:  # what would run, and how (refllm.plan), without loading or generating
        from refllm.plan import build_plan

        plan = build_plan(model_name, backend=args.backend, num_ctx=args.num_ctx)
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    recipe = model_recipe(model_name)  # a store model brings its PARAMETERs, SYSTEM, MESSAGEs and TEMPLATE
    options = options_from_args(args, defaults=recipe.params)  # flags override the stored parameters
    system = args.system if args.system is not None else recipe.system
    rules = rules_from_args(args)
    prompt = prompt_from(args.prompt, sys.stdin)
    with Spinner(sys.stderr, f"loading {model_name}"):
        started = time.perf_counter_ns()
        model = _load(recipe, args.backend)
        load_ns = time.perf_counter_ns() - started
    if prompt is None:
        chat = Chat(model, options, system=system, verbose=args.verbose, rules=rules, hide_thinking=args.hidethinking)
        chat.messages = list(recipe.messages)  # the stored conversation starts the chat
        return chat.loop()
    if not prompt.strip():
        return 0  # nothing to answer: like Ollama, an empty prompt only loads the model
    if recipe.messages and not args.raw:  # the stored conversation comes before the prompt
        prompt = [*recipe.messages, {"role": "user", "content": prompt}]
    result = stream_answer(model, prompt, options, system=system, raw=args.raw, rules=rules, hide_thinking=args.hidethinking)
    if args.verbose:
        print_stats(result, load_ns)
    return 0


# --------------------------------------------------------------------------- arguments


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling flags that ``options_from_args`` reads (``refllm run``, ``prompt``, ``chat``)."""
    p.add_argument("--seed", type=int, help="random seed: the same seed and options give the same answer")
    p.add_argument("-n", "--num-predict", "--max-new-tokens", type=int, dest="num_predict", help="most tokens to generate (-1: no limit)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, dest="top_k")
    p.add_argument("--top-p", type=float, dest="top_p")
    p.add_argument("--num-ctx", type=int, dest="num_ctx", help="context window in tokens (default 4096, at most the model's)")
    p.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE", help="any Ollama option, e.g. -o repeat_penalty=1.0")


def options_from_args(args: argparse.Namespace, defaults: dict | None = None) -> Options:
    """The command line's options over ``defaults`` (a store model's PARAMETERs), validated (bad ones: InvalidRequest, exit 1)."""
    values = {
        name: getattr(args, name)
        for name in ("seed", "num_predict", "temperature", "top_k", "top_p", "num_ctx")
        if getattr(args, name) is not None
    }
    if args.stop:
        values["stop"] = args.stop
    options = Options.from_dict({**(defaults or {}), **values})
    for item in args.option:
        name, sep, text = item.partition("=")
        if not sep:
            raise InvalidRequest(f"option '{item}' must look like NAME=VALUE")
        options = options.updated({name.strip(): parse_option_text(name.strip(), text)})
    return options


def rules_from_args(args: argparse.Namespace):
    """``--format`` and ``--think`` as ``OutputRules`` (None when neither is given)."""
    from refllm.chat.turn import OutputRules
    from refllm.constrain.schema import ollama_format
    from refllm.thinking import check_think

    if args.format is None and args.think is None:
        return None
    schema = args.format
    if schema is not None and schema != "json":
        import json

        try:
            schema = json.loads(schema)
        except ValueError:
            raise InvalidRequest('--format must be "json" or a JSON schema') from None
    if args.think is not None and args.think not in ("true", "false", "low", "medium", "high"):
        args.prompt.insert(0, args.think)  # "--think why?": a bare --think followed by the prompt
        args.think = "true"
    think = {"true": True, "false": False}.get(args.think, args.think) if args.think is not None else None
    return OutputRules(format=ollama_format(schema), think=check_think(think))


def prompt_from(words: list[str], stdin) -> str | None:
    """The prompt: piped stdin first, then the words, joined by a space (as Ollama does).

    None means "no prompt at all, and stdin is a terminal": start the interactive chat.
    """
    parts = list(words)
    if stdin is not None and not stdin.isatty():
        parts.insert(0, stdin.read())
    elif not parts:
        return None
    return " ".join(parts)


def _default_model_name() -> str:
    from refllm.config import load_settings

    return load_settings().runtime.model_reference


def model_recipe(name: str):
    """What NAME means, resolved as the server resolves it (``refllm.store.resolve``): the GGUF and the store's defaults."""
    from refllm.engine.engine import default_resolver

    return default_resolver(name)


def _load(name_or_recipe, backend: str | None):
    from refllm.engine.engine import ModelRecipe, default_loader

    recipe = name_or_recipe if isinstance(name_or_recipe, ModelRecipe) else model_recipe(name_or_recipe)
    model = default_loader(recipe)  # the server's loader: a store TEMPLATE replaces the GGUF's chat template
    if backend is None:  # runtime.device decides (refllm.toml, REFLLM_DEVICE)
        from refllm.plan import configured_backend

        backend = configured_backend()
    from refllm.kernels.reference import get_backend

    get_backend(backend)  # InvalidRequest when it can't run here (e.g. cuda without a GPU)
    model.backend = backend
    if backend == "numba":
        from refllm.plan import apply_thread_setting

        apply_thread_setting()  # runtime.num_threads
    from refllm.generate import prepare

    prepare(model)  # tokenizer and weights now, under the spinner, rather than at the first token
    return model


# --------------------------------------------------------------------------- one answer


def stream_answer(model, prompt, options: Options, *, system=None, raw=False, session=None, out=None,
                  rules=None, hide_thinking: bool = False) -> GenerationResult:
    """Print the answer as it is generated; return the result (stats, done_reason).

    ``rules`` (``--format``, ``--think``): constrained output; a thinking model's reasoning is
    printed between "Thinking..." and "...done thinking." (not at all with ``hide_thinking``)
    and left out of the returned text. Ctrl-C stops the generation (the stream is closed)
    and is raised again for the caller.
    """
    out = out or sys.stdout
    from refllm.chat.turn import plan_turn
    from refllm.generate import check_prompt_text_fits, context_size

    check_prompt_text_fits(model, prompt, context_size(model, options), raw=raw, system=system)  # plan_turn may tokenize
    turn = plan_turn(model, prompt, raw=raw, system=system, rules=rules)
    stream = model.generate(turn.prompt, stream=True, raw=turn.raw, system=turn.system, session=session, options=options,
                            constraint=turn.constraint)
    show = ThinkingPrinter(out, hide_thinking)
    wrote_newline = True
    with Spinner(sys.stderr, "") as spinner:
        try:
            for item in stream:
                piece = turn.finish() if isinstance(item, GenerationResult) else turn.split(item)
                if piece:
                    spinner.stop()
                    show.thinking(piece.thinking)
                    if piece.content:
                        show.end_thinking()
                        out.write(piece.content)
                        out.flush()
                        wrote_newline = piece.content.endswith("\n")
                if isinstance(item, GenerationResult):
                    show.end_thinking()
                    if not wrote_newline:
                        out.write("\n")
                    out.flush()
                    if turn.total.thinking:  # the conversation keeps the answer, not the reasoning
                        item.text = turn.total.content
                    return item
        finally:
            stream.close()  # Ctrl-C or a broken pipe: stop computing at once
    raise AssertionError("generation ended without a result")  # pragma: no cover


class ThinkingPrinter:
    """Reasoning on the terminal, as ``ollama run`` shows it: "Thinking...", the text, "...done thinking."."""

    def __init__(self, out, hide: bool):
        self.out, self.hide, self.open = out, hide, False

    def thinking(self, text: str) -> None:
        if not text or self.hide:
            return
        if not self.open:
            self.out.write("Thinking...\n")
            self.open = True
        self.out.write(text)
        self.out.flush()

    def end_thinking(self) -> None:
        if self.open:
            self.out.write("\n...done thinking.\n\n")
            self.open = False


def print_stats(result: GenerationResult, load_ns: int, err=None) -> None:
    """Ollama's ``--verbose`` block, on stderr."""
    err = err or sys.stderr

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns > 0 else "n/a"

    lines = [
        ("total duration", format_duration(result.total_duration + load_ns)),
        ("load duration", format_duration(result.load_duration + load_ns)),
        ("prompt eval count", f"{result.prompt_eval_count} token(s)"),
        ("prompt eval duration", format_duration(result.prompt_eval_duration)),
        ("prompt eval rate", rate(result.prompt_eval_count, result.prompt_eval_duration)),
        ("eval count", f"{result.eval_count} token(s)"),
        ("eval duration", format_duration(result.eval_duration)),
        ("eval rate", rate(result.eval_count, result.eval_duration)),
    ]
    for label, value in lines:
        print(f"{label + ':':<22}{value}", file=err)
    err.flush()


def format_duration(ns: int) -> str:
    """Like Go's time.Duration: 1.234s, 56.789ms, 12.3µs."""
    if ns >= 10**9:
        return f"{ns / 1e9:.3f}s"
    if ns >= 10**6:
        return f"{ns / 1e6:.3f}ms"
    if ns >= 10**3:
        return f"{ns / 1e3:.3f}µs"
    return f"{ns}ns"


# --------------------------------------------------------------------------- interactive chat

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message."""

SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats"""

SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show parameters   Show parameters for this model
  /show system       Show system message"""


class Chat:
    """The interactive loop: read a message or a command, answer, keep the conversation.

    The conversation is re-rendered through the chat template each turn; a ``Session`` keeps
    the KV cache, so only the new part of the prompt is evaluated.
    """

    def __init__(self, model, options: Options, system: str | None = None, verbose: bool = False,
                 rules=None, hide_thinking: bool = False):
        self.model = model
        self.options = options
        self.rules, self.hide_thinking = rules, hide_thinking  # --format, --think, --hidethinking
        self.user_options: dict[str, object] = {}  # what /set parameter changed (for /show parameters)
        self.system = system
        self.verbose = verbose
        self.messages: list[dict] = []
        self.session = Session()

    def loop(self) -> int:
        while True:
            try:
                text = read_message()
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print("\nUse Ctrl + d or /bye to exit.")
                continue
            if text.startswith("/"):
                if self.command(text) == "bye":
                    return 0
            elif text.strip():
                self.answer(text)

    def answer(self, text: str) -> None:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        messages.append({"role": "user", "content": text})
        try:
            result = stream_answer(self.model, messages, self.options, session=self.session, rules=self.rules,
                                   hide_thinking=self.hide_thinking)
        except KeyboardInterrupt:
            print("\n(stopped)")
            return
        except InvalidRequest as e:  # e.g. the conversation no longer fits the context
            print(f"Error: {e}")
            return
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": result.text}]
        if self.verbose:
            print_stats(result, 0)
        print()  # a blank line before the next prompt, as Ollama leaves

    def command(self, line: str) -> str | None:
        words = line.split()
        name, rest = words[0], words[1:]
        if name in ("/bye", "/exit"):
            return "bye"
        if name in ("/?", "/help"):
            print({"set": SET_HELP, "show": SHOW_HELP}.get(rest[0].lstrip("/") if rest else "", HELP))
        elif name == "/clear":
            self.messages, self.session = [], Session()
            print("Cleared session context")
        elif name == "/set":
            self.set_command(line, rest)
        elif name == "/show":
            self.show_command(rest)
        else:
            print(f"Unknown command '{name}'. Type /? for help")
        return None

    def set_command(self, line: str, rest: list[str]) -> None:
        what = rest[0] if rest else ""
        if what == "parameter" and len(rest) >= 3:
            name, value_text = rest[1], " ".join(rest[2:])
            try:
                value = parse_option_text(name, value_text)
                self.options = self.options.updated({name: value})
            except InvalidRequest as e:
                print(f"Couldn't set parameter: {e}")
                return
            self.user_options[name] = value
            print(f"Set parameter '{name}' to '{value_text}'")
        elif what == "parameter":
            print("Usage: /set parameter NAME VALUE   e.g. /set parameter temperature 0.2")
        elif what == "system" and len(rest) >= 2:
            self.system = line.split(None, 2)[2].strip().strip('"')
            print("Set system message.")
        elif what == "verbose":
            self.verbose = True
            print("Set 'verbose' mode.")
        elif what == "quiet":
            self.verbose = False
            print("Set 'quiet' mode.")
        else:
            print(SET_HELP)

    def show_command(self, rest: list[str]) -> None:
        what = rest[0] if rest else ""
        if what == "info":
            print(model_info_text(self.model))
        elif what == "parameters":
            if not self.user_options:
                print("No parameters were specified for this model.")
            for name, value in self.user_options.items():
                print(f"{name:<20}{value}")
        elif what == "system":
            print(self.system or "No system message was specified for this model.")
        else:
            print(SHOW_HELP)


def read_message() -> str:
    """One message from the user: a line, or several between triple quotes."""
    line = input(">>> ")
    if not line.startswith('"""'):
        return line
    text = line[3:]
    if text.endswith('"""') and len(text) >= 3:
        return text[:-3]
    lines = [text] if text else []
    while True:
        line = input("... ")
        if line.endswith('"""'):
            lines.append(line[:-3])
            return "\n".join(lines).rstrip("\n")
        lines.append(line)


def model_info_text(model) -> str:
    """The "Model" block of ``/show info`` (the same facts ``refllm show`` prints)."""
    from refllm.server.model_info import details

    info = details(model.path)
    arch = model.architecture
    rows = [
        ("architecture", arch),
        ("parameters", info["parameter_size"]),
        ("context length", model.metadata.get(f"{arch}.context_length")),
        ("embedding length", model.metadata.get(f"{arch}.embedding_length")),
        ("quantization", info["quantization_level"]),
    ]
    return "  Model\n" + "\n".join(f"    {label:<20}{value}" for label, value in rows if value not in (None, ""))


# --------------------------------------------------------------------------- progress


class Spinner:
    """A spinner on stderr while something slow happens (only on a terminal, only after 0.3 s)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream, label: str):
        self.stream, self.label = stream, label
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "Spinner":
        if getattr(self.stream, "isatty", lambda: False)():
            self.thread = threading.Thread(target=self._spin, daemon=True)
            self.thread.start()
        return self

    def _spin(self) -> None:
        if self.done.wait(0.3):
            return
        i = 0
        while not self.done.wait(0.1):
            self.stream.write(f"\r{self.FRAMES[i % len(self.FRAMES)]} {self.label}")
            self.stream.flush()
            i += 1
        self.stream.write("\r\033[K")  # erase the spinner line
        self.stream.flush()

    def stop(self) -> None:
        if self.thread is not None and not self.done.is_set():
            self.done.set()
            self.thread.join()

    def __exit__(self, *exc) -> None:
        self.stop()
