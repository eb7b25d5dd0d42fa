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
from refllm.thinking import THINK_EFFORTS

THINK_VALUES = ("true", "false", *THINK_EFFORTS)  # what --think takes


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
    p.add_argument("--nowordwrap", action="store_true",
                   help="don't wrap words to the next line (answers on a terminal are wrapped at its width, as Ollama does)")
    # Ollama's flags that have nothing to act on here: accepted (and checked) so that Ollama scripts keep working.
    p.add_argument("--keepalive", metavar="DURATION",
                   help="accepted for Ollama's scripts (e.g. 5m); refllm run holds the model in its own process until it exits")
    p.add_argument("--insecure", action="store_true", help="accepted for Ollama's scripts; refllm uses no registry")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    model_name = args.model or _default_model_name()
    if args.keepalive is not None:
        from refllm.engine.keep_alive import parse_keep_alive

        parse_keep_alive(args.keepalive)  # a bad duration is an error, as in Ollama
    if args.plan_json:  # what would run, and how (refllm.plan), without loading or generating
        from refllm.plan import build_plan

        from refllm.cli.plan import plan_exit_code

        plan = build_plan(model_name, backend=args.backend, num_ctx=args.num_ctx)
        print(json.dumps(plan.to_dict(), indent=2))
        return plan_exit_code(plan.support_level)
    recipe = model_recipe(model_name)  # a store model brings its PARAMETERs, SYSTEM, MESSAGEs and TEMPLATE
    options = options_from_args(args, defaults=recipe.params)  # flags override the stored parameters
    system = args.system if args.system is not None else recipe.system
    rules = rules_from_args(args)
    prompt = prompt_from(args.prompt, sys.stdin)
    with Spinner(sys.stderr, f"loading {model_name}"):
        started = time.perf_counter_ns()
        model = _load(recipe, args.backend)
        load_ns = time.perf_counter_ns() - started
    if rules is not None and rules.think not in (None, False) and not supports_thinking(model):
        raise InvalidRequest(f"model '{recipe.name}' does not support thinking: run it without --think")
    if prompt is None:
        chat = Chat(model, options, system=system, verbose=args.verbose, rules=rules, hide_thinking=args.hidethinking,
                    recipe=recipe, user_options=option_values(args))
        chat.word_wrap = not args.nowordwrap
        return chat.loop()
    if not prompt.strip():
        return 0  # nothing to answer: like Ollama, an empty prompt only loads the model
    if recipe.messages and not args.raw:  # the stored conversation comes before the prompt
        prompt = [*recipe.messages, {"role": "user", "content": prompt}]
    result = stream_answer(model, prompt, options, system=system, raw=args.raw, rules=rules, hide_thinking=args.hidethinking,
                           out=terminal_output(not args.nowordwrap))
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
    return Options.from_dict({**(defaults or {}), **option_values(args)})


def option_values(args: argparse.Namespace) -> dict:
    """The options the command line sets: the sampling flags, then each ``-o NAME=VALUE``."""
    values = {
        name: getattr(args, name)
        for name in ("seed", "num_predict", "temperature", "top_k", "top_p", "num_ctx")
        if getattr(args, name) is not None
    }
    if args.stop:
        values["stop"] = args.stop
    for item in args.option:
        name, sep, text = item.partition("=")
        if not sep:
            raise InvalidRequest(f"option '{item}' must look like NAME=VALUE")
        values[name.strip()] = parse_option_text(name.strip(), text)
    return values


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
    # "--think why?" arrives as --think=true with "why?" among the prompt words (cli.main.bare_think_flags)
    if args.think is not None and args.think.lower() not in THINK_VALUES:
        raise InvalidRequest(f"--think must be true, false, low, medium or high, got {args.think!r}")
    think = {"true": True, "false": False}.get(args.think.lower(), args.think.lower()) if args.think is not None else None
    return OutputRules(format=ollama_format(schema), think=check_think(think))


def prompt_from(words: list[str], stdin) -> str | None:
    """The prompt: piped stdin first, then the words, joined by a space (as Ollama does).

    None means "no prompt at all, and stdin is a terminal": start the interactive chat.
    A closed stdin (``stdin`` None) is read as an empty pipe.
    """
    parts = [valid_text(word) for word in words]
    if stdin is None:
        return " ".join(parts)
    if not stdin.isatty():
        buffer = getattr(stdin, "buffer", None)  # bytes: a file that is not UTF-8 must not stop the read
        parts.insert(0, buffer.read().decode("utf-8", "replace") if buffer is not None else valid_text(stdin.read()))
    elif not parts:
        return None
    return " ".join(parts)


def valid_text(text: str) -> str:
    """Text with the bytes that were not UTF-8 (Python keeps them as lone surrogates) shown as U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


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


class WordWrapper:
    """Streamed text with lines broken at spaces before ``width`` columns, as Ollama wraps words.

    The word being streamed is held back until a space or newline ends it, then goes on
    this line or, if it would pass the edge, on the next one. A word longer than a whole
    line is cut at the edge.
    """

    def __init__(self, out, width: int):
        self.out, self.width = out, max(10, width)
        self.column = 0  # characters on the current line
        self.word = ""  # held back: the word not ended yet
        self.spaces = 0  # spaces written after the last word (dropped where the line breaks)

    def write(self, text: str) -> None:
        for char in text:
            if char == "\n":
                self._put_word()
                self.out.write("\n")
                self.column = self.spaces = 0
            elif char == " ":
                self._put_word()
                self.spaces += 1
            else:
                self.word += char
                if len(self.word) >= self.width:
                    self._put_word()

    def _put_word(self) -> None:
        if not self.word:
            return
        if self.column > 0 and self.column + self.spaces + len(self.word) > self.width:
            self.out.write("\n")  # the spaces before the word end the line instead
            self.column = 0
        elif self.spaces:
            self.out.write(" " * self.spaces)
            self.column += self.spaces
        self.out.write(self.word)
        self.column += len(self.word)
        self.word, self.spaces = "", 0

    def flush(self) -> None:
        self.out.flush()


def terminal_output(word_wrap: bool):
    """Where an answer goes: stdout, word-wrapped (``WordWrapper``) when it is a terminal and ``word_wrap`` is on."""
    if not word_wrap or not sys.stdout.isatty():
        return sys.stdout
    import shutil

    return WordWrapper(sys.stdout, shutil.get_terminal_size().columns - 5)  # Ollama leaves 5 columns free


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
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message."""

SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking"""

SET_PARAMETER_HELP = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter stop <string> <string> ...   Set the stop parameters"""

SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template"""

SHORTCUTS_HELP = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Alt + b             Move back (left) one word
  Alt + f             Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor
  Up / Down           Previous / next line typed

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit refllm (/bye)"""


class Chat:
    """The interactive loop: read a message or a command, answer, keep the conversation.

    The conversation is re-rendered through the chat template each turn; a ``Session`` keeps
    the KV cache, so only the new part of the prompt is evaluated. ``recipe`` is what the
    model name stands for (``refllm.engine.engine.ModelRecipe``): its stored parameters,
    system message, conversation, template and license, for ``/show`` and ``/save``.
    """

    def __init__(self, model, options: Options, system: str | None = None, verbose: bool = False,
                 rules=None, hide_thinking: bool = False, recipe=None, user_options: dict | None = None):
        from refllm.engine.engine import ModelRecipe

        self.model = model
        self.recipe = recipe or ModelRecipe(name=model.name, gguf_path=model.path, source="file")
        self.options = options
        self.format = rules.format if rules is not None else None  # --format, /set format json
        self.think = rules.think if rules is not None else None  # --think, /set think, /set nothink
        self.hide_thinking = hide_thinking
        self.word_wrap = True  # /set wordwrap, /set nowordwrap (only ever on a terminal)
        # what the command line and /set parameter set: kept over the model's own (/load), shown, saved (/save)
        self.user_options: dict[str, object] = dict(user_options or {})
        self.system = system
        self.verbose = verbose
        self.messages: list[dict] = list(self.recipe.messages)  # a stored conversation starts the chat
        self.session = Session()

    @property
    def rules(self):
        from refllm.chat.turn import OutputRules

        if self.format is None and self.think is None:
            return None
        return OutputRules(format=self.format, think=self.think)

    def loop(self) -> int:
        enable_line_editing()
        self.show_history()
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
                try:
                    if self.command(text) == "bye":
                        return 0
                except KeyboardInterrupt:  # e.g. Ctrl-C during /load or /save: nothing changed, the chat goes on
                    print("\n(stopped)")
            elif text.strip():
                self.answer(text)

    def show_history(self) -> None:
        """A stored conversation (a model's MESSAGEs, a session kept with /save), as Ollama shows it on start."""
        for message in self.messages:
            if message["role"] == "user":
                print(f">>> {message['content']}")
            elif message["role"] == "assistant":
                print(f"{message['content']}\n")

    def answer(self, text: str) -> None:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        messages.append({"role": "user", "content": text})
        try:
            result = stream_answer(self.model, messages, self.options, session=self.session, rules=self.rules,
                                   hide_thinking=self.hide_thinking, out=terminal_output(self.word_wrap))
        except KeyboardInterrupt:
            print("\n(stopped)")
            return
        except InvalidRequest as e:  # e.g. the conversation no longer fits the context
            print(f"Error: {e}")
            if "num_ctx" in str(e):  # nothing is cut silently: say how to go on
                print("The conversation is kept: /set parameter num_ctx N makes room, /save NAME keeps it, /clear starts over.")
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
            topic = rest[0].lstrip("/") if rest else ""
            print({"set": SET_HELP, "show": SHOW_HELP, "shortcuts": SHORTCUTS_HELP, "shortcut": SHORTCUTS_HELP}.get(topic, HELP))
        elif name == "/clear":
            self.messages, self.session = [], Session()
            print("Cleared session context")
        elif name == "/set":
            self.set_command(line, rest)
        elif name == "/show":
            self.show_command(rest)
        elif name == "/load" and len(rest) == 1:
            self.load_command(rest[0])
        elif name == "/save" and len(rest) == 1:
            self.save_command(rest[0])
        elif name in ("/load", "/save"):
            print(f"Usage:\n  {name} <modelname>")
        else:
            print(f"Unknown command '{name}'. Type /? for help")
        return None

    # -- /set

    def set_command(self, line: str, rest: list[str]) -> None:
        what = rest[0] if rest else ""
        if what == "parameter" and len(rest) >= 3:
            self.set_parameter(rest[1], rest[2:])
        elif what == "parameter":
            print(SET_PARAMETER_HELP)
        elif what == "system" and len(rest) >= 2:
            self.system = line.split(None, 2)[2].strip().strip('"')
            print("Set system message.")
        elif what in ("history", "nohistory"):
            set_line_history(what == "history")
            print(f"Set '{what}' mode.")
        elif what in ("wordwrap", "nowordwrap"):
            self.word_wrap = what == "wordwrap"
            print(f"Set '{what}' mode.")
        elif what == "format":
            if rest[1:] != ["json"]:
                print("Invalid or missing format. For 'json' mode use '/set format json'")
                return
            from refllm.constrain.schema import ollama_format

            self.format = ollama_format("json")
            print("Set format to 'json' mode.")
        elif what == "noformat":
            self.format = None
            print("Disabled format.")
        elif what in ("verbose", "quiet"):
            self.verbose = what == "verbose"
            print(f"Set '{what}' mode.")
        elif what == "think":
            self.set_think(rest[1] if len(rest) > 1 else True)
        elif what == "nothink":
            self.think = False
            print("Set 'nothink' mode.")
        else:
            print(SET_HELP)

    def set_parameter(self, name: str, values: list[str]) -> None:
        """``/set parameter NAME VALUE...`` (``stop`` takes several values, as in Ollama)."""
        try:
            value = parse_option_text(name, " ".join(values))
            self.options = self.options.updated({name: value})
        except InvalidRequest as e:
            print(f"Couldn't set parameter: {e}")
            return
        self.user_options[name] = value
        print(f"Set parameter '{name}' to '{', '.join(values)}'")

    def set_think(self, level) -> None:
        if level is not True and level not in THINK_EFFORTS:
            print(f"Invalid think level '{level}': use /set think, or /set think {' | '.join(THINK_EFFORTS)}")
        elif not supports_thinking(self.model):
            print(f"warning: model '{self.recipe.name}' does not support thinking output; 'think' mode not set.")
        else:
            self.think = level
            print("Set 'think' mode." if level is True else f"Set 'think' mode to '{level}'.")

    # -- /show

    def show_command(self, rest: list[str]) -> None:
        what = rest[0] if rest else ""
        if what == "info":
            print(model_info_text(self.model))
        elif what == "license":
            print(self.recipe.license or self.model.metadata.get("general.license") or "No license was specified for this model.")
        elif what == "modelfile":
            print(self.modelfile(), end="")
        elif what == "parameters":
            self.show_parameters()
        elif what == "system":
            print(self.system or "No system message was specified for this model.")
        elif what == "template":
            print(self.template() or "No prompt template was specified for this model.")
        else:
            print(SHOW_HELP)

    def show_parameters(self) -> None:
        from refllm.store.modelfile import format_parameters

        if self.user_options:
            print("User defined parameters:")
            print(format_parameters(self.user_options))
        if self.recipe.params:
            print("Model defined parameters:" if not self.user_options else "\nModel defined parameters:")
            print(format_parameters(self.recipe.params))
        if not self.user_options and not self.recipe.params:
            print("No parameters were specified for this model.")

    def template(self) -> str:
        """The template the model chats with: the store's TEMPLATE, else the GGUF's own."""
        source = self.recipe.template or getattr(getattr(self.model, "chat_template", None), "source", None)
        return source if isinstance(source, str) else ""

    def modelfile(self) -> str:
        """This session as a Modelfile: the model's, with what /set changed."""
        from refllm.store.modelfile import format_modelfile

        return format_modelfile(self.recipe.name, str(self.recipe.gguf_path), {**self.recipe.params, **self.user_options},
                                self.system, self.recipe.template, self.recipe.messages, self.recipe.license)

    # -- /load and /save

    def load_command(self, name: str) -> None:
        """Switch to another model (or a session saved with /save); the conversation starts over."""
        from refllm.errors import RefllmError
        from refllm.gguf import GGUFError

        print(f"Loading model '{name}'")
        try:
            recipe = model_recipe(name)
            options = Options.from_dict({**recipe.params, **self.user_options})
            with Spinner(sys.stderr, f"loading {name}"):
                model = _load(recipe, self.model.backend)
        except (RefllmError, GGUFError) as e:
            print(f"Error: {e}")
            return
        if self.system == self.recipe.system:  # the old model's system message goes with it; one set by /set stays
            self.system = recipe.system
        self.model, self.recipe, self.options = model, recipe, options
        self.messages, self.session = list(recipe.messages), Session()
        if self.think not in (None, False) and not supports_thinking(model):
            self.think = None
            print(f"'think' mode is off: model '{recipe.name}' does not support thinking output.")
        self.show_history()

    def save_command(self, name: str) -> None:
        """A new store model: this model with the session's parameters, system message and conversation."""
        from refllm import store
        from refllm.errors import RefllmError
        from refllm.store.modelfile import Modelfile

        base = str(self.recipe.gguf_path) if self.recipe.source == "file" else self.recipe.name
        modelfile = Modelfile(from_=base, parameters=dict(self.user_options), system=self.system,
                              messages=[dict(m) for m in self.messages])
        try:
            store.create(name, modelfile)
        except RefllmError as e:
            print(f"Error: {e}")
            return
        print(f"Created new model '{name}'")


def supports_thinking(model) -> bool:
    """True if the model's chat template marks reasoning (refllm.thinking), so think can be on."""
    from refllm.thinking import thinking_markers

    source = getattr(getattr(model, "chat_template", None), "source", None)
    return thinking_markers(source if isinstance(source, str) else None) is not None


def enable_line_editing() -> None:
    """On a real terminal, line editing and history for input() (GNU readline, where Python has it)."""
    if sys.stdin is not sys.__stdin__ or not sys.stdin.isatty():
        return
    try:
        import readline  # noqa: F401  (importing it is what turns it on for input())
    except ImportError:
        pass


def set_line_history(on: bool) -> None:
    """/set history, /set nohistory: whether typed lines are kept for Up/Down."""
    readline = sys.modules.get("readline")  # only where enable_line_editing loaded it
    if readline is not None:
        readline.set_auto_history(on)


def read_message() -> str:
    """One message from the user: a line, or several between triple quotes.

    ``/set system`` with a triple-quoted text may span lines too, as in Ollama; the
    command comes back with the text after it: ``/set system line one\nline two``.
    """
    line = input(">>> ")
    if line.startswith('/set system """'):
        return "/set system " + _rest_of_block(line[len("/set system "):])
    if not line.startswith('"""'):
        return line
    return _rest_of_block(line)


def _rest_of_block(line: str) -> str:
    """The text of a triple-quoted block that starts at ``line``, reading more lines until it closes."""
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
    from refllm.store.listing import details

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
