"""``refllm run``: one-shot answers, piped stdin, --verbose, errors, and the interactive chat.

In-process tests call ``refllm.cli.main.main`` with the real SmolLM2 (loaded once and shared);
one subprocess test checks the real entry point with piped stdin.
"""

from __future__ import annotations

import io
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import GOLDEN

import refllm
from refllm.cli import run as run_cli
from refllm.cli.main import main

RAW_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"  # golden prompt 5: llama.cpp continues " 9, 10, ..." by wide margins
GREEDY = ["--temperature", "0", "-o", "repeat_penalty=1.0"]


class FakeTerminal(io.StringIO):
    """Lines typed at a terminal: ``isatty()`` is True, so ``refllm run`` starts the chat."""

    def isatty(self) -> bool:
        return True


class TerminalWithCtrlC(FakeTerminal):
    """A terminal where the line "^C" is the user pressing Ctrl-C at the prompt."""

    def readline(self, *args) -> str:
        line = super().readline(*args)
        if line == "^C\n":
            raise KeyboardInterrupt
        return line


class Piped(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return refllm.load(smollm2_gguf)  # the default backend, as users get it


@pytest.fixture
def cli(monkeypatch, smollm2):
    """Run ``refllm run ...`` in-process with the shared model and the given stdin."""

    def run(*args: str, stdin: io.StringIO | None = None) -> int:
        monkeypatch.setattr(refllm, "load", lambda name: smollm2)
        monkeypatch.setattr(sys, "stdin", stdin if stdin is not None else FakeTerminal(""))
        return main(["run", "smollm2", *args])  # options after the prompt, as `ollama run m "hi" --verbose`

    return run


# ---------------------------------------------------------------- one-shot


def test_prompt_is_answered_and_verbose_prints_ollamas_timing_block(cli, smollm2, capsys):
    assert cli(RAW_PROMPT, "--raw", "-n", "4", *GREEDY, "--verbose") == 0
    out, err = capsys.readouterr()
    llama_cpp = np.load(GOLDEN / "logits" / "smollm2.llamacpp.npz")["p5_greedy"][:4]
    assert out == smollm2.detokenize(llama_cpp) + "\n"
    for label in ("total duration:", "load duration:", "prompt eval count:", "prompt eval duration:",
                  "prompt eval rate:", "eval count:", "eval duration:", "eval rate:"):  # fmt: skip
        assert label in err
    assert "eval count:           4 token(s)" in err


def test_prompt_words_follow_piped_stdin():
    assert run_cli.prompt_from(["in", "French"], Piped("Say hello\n")) == "Say hello\n in French"
    assert run_cli.prompt_from([], Piped("only stdin")) == "only stdin"
    assert run_cli.prompt_from(["just", "words"], FakeTerminal("")) == "just words"
    assert run_cli.prompt_from([], FakeTerminal("")) is None  # -> interactive chat


def test_bytes_that_are_not_utf8_become_replacement_characters():
    class PipedBytes(Piped):  # sys.stdin with a Latin-1 file piped in: Python keeps the bad bytes as lone surrogates
        buffer = io.BytesIO(b"caf\xe9")

        def read(self) -> str:
            return self.buffer.getvalue().decode("utf-8", "surrogateescape")

    assert run_cli.prompt_from(["au\udcc0lait"], PipedBytes()) == "caf\ufffd au\ufffdlait"  # (argv: the same)


def test_prompt_after_the_options_as_ollamas_docs_write_it(cli, smollm2, capsys):
    # `ollama run deepseek-r1 --think=false "Summarize this article"`: options between MODEL and PROMPT
    assert cli("--raw", "-n", "4", *GREEDY, "--think=false", "--nowordwrap", "--keepalive", "5m", *RAW_PROMPT.split(" ", 1)) == 0
    llama_cpp = np.load(GOLDEN / "logits" / "smollm2.llamacpp.npz")["p5_greedy"][:4]
    assert capsys.readouterr().out == smollm2.detokenize(llama_cpp) + "\n"


@pytest.mark.parametrize("argv, prompt, think", [
    (["run", "m", "-n", "3", "--", "--hello", "there"], ["--hello", "there"], None),  # after "--", words
    (["run", "m", "-n", "3", "-5"], ["-5"], None),  # a negative number is a word, as argparse has it
    (["run", "m", "a", "-n", "3", "b"], ["a", "b"], None),
    (["run", "m", "A", "--think", "B"], ["A", "B"], "true"),  # Ollama: thinking on, the prompt "A B"
    (["run", "m", "A", "--think", "B", "--verbose", "C"], ["A", "B", "C"], "true"),
    (["run", "m", "--think", "Why?"], ["Why?"], "true"),
    (["run", "m", "A", "--think", "high", "B"], ["A", "B"], "high"),  # a level is the flag's value
    (["run", "m", "A", "--think=false", "B"], ["A", "B"], "false"),
    (["run", "m", "A", "--think"], ["A"], "true"),
    (["run", "m", "--", "A", "--think", "B"], ["A", "--think", "B"], None),
])  # fmt: skip
def test_prompt_words_keep_their_order_around_options(argv, prompt, think):
    from refllm.cli.main import build_parser, parse_arguments

    args = parse_arguments(build_parser(), argv)
    assert (args.prompt, args.think) == (prompt, think)


@pytest.mark.parametrize("argv, usage, unknown", [
    (["run", "smollm2", "hi", "--bogus"], "usage: refllm run", "--bogus"),
    (["run", "smollm2", "--bogus", "hi"], "usage: refllm run", "--bogus"),
    (["list", "extra"], "usage: refllm list", "extra"),
])  # fmt: skip
def test_unknown_arguments_are_usage_errors_of_their_command(capsys, argv, usage, unknown):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and err.rstrip().endswith("error: unrecognized arguments: " + unknown)


def test_piped_stdin_through_the_real_entry_point(smollm2_gguf):
    proc = subprocess.run(
        [sys.executable, "-m", "refllm", "run", str(smollm2_gguf), "--raw", "-n", "3", *GREEDY],
        input=RAW_PROMPT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stdout.endswith("\n")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["hi", "-o", "tempreature=1"], "tempreature"),
        (["hi", "-o", "temperature"], "NAME=VALUE"),
        (["hi", "--top-p", "2"], "top_p"),
        (["--think", "hi"], "does not support thinking: run it without --think"),
        (["hi", "--think=maybe"], "--think must be true, false, low, medium or high, got 'maybe'"),
        (["hi", "--keepalive", "soon"], "invalid duration"),
    ],
)
def test_bad_options_are_one_line_errors(cli, capsys, args, message):
    assert cli(*args) == 1
    out, err = capsys.readouterr()
    assert message in err and err.startswith("Error: ") and err.count("\n") == 1 and out == ""


def test_unavailable_backend_is_a_one_line_error(cli, capsys, monkeypatch):
    import refllm.kernels.cuda

    monkeypatch.setattr(refllm.kernels.cuda, "cuda_status", lambda: (False, "no GPU found"))  # as on a CPU-only machine
    assert cli("hi", "--backend", "cuda") == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "cuda" in err and "no GPU found" in err and err.count("\n") == 1


def test_unknown_model_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeTerminal(""))
    assert main(["run", "no-such-model-anywhere", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "no-such-model-anywhere" in err and "Traceback" not in err


def test_format_duration():
    assert run_cli.format_duration(1_234_000_000) == "1.234s"
    assert run_cli.format_duration(56_789_000) == "56.789ms"
    assert run_cli.format_duration(12_300) == "12.300µs"


def test_words_wrap_at_spaces_before_the_edge():
    out = io.StringIO()
    wrapper = run_cli.WordWrapper(out, 10)
    for chunk in ["hel", "lo wo", "rld foo bar", "\nabcdefghijklmnop end  ", "\n"]:  # streamed in pieces
        wrapper.write(chunk)
    assert out.getvalue() == "hello\nworld foo\nbar\nabcdefghij\nklmnop end\n"
    assert all(len(line) <= 10 for line in out.getvalue().splitlines())


def test_answers_wrap_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    assert isinstance(run_cli.terminal_output(True), run_cli.WordWrapper)
    assert run_cli.terminal_output(False) is sys.stdout  # --nowordwrap, /set nowordwrap
    monkeypatch.setattr(sys, "stdout", Piped())
    assert run_cli.terminal_output(True) is sys.stdout  # a pipe or file gets the text as generated


# ---------------------------------------------------------------- interactive


def test_chat_commands(cli, capsys):
    typed = "\n".join([
        "/?",
        "/set parameter temperature 0.25",
        "/set parameter top_k many",
        "/set parameter bogus 1",
        "/show parameters",
        "/set system Answer in one word.",
        "/show system",
        "/show info",
        "/frobnicate",
        "^C",
        "/clear",
        "/bye",
        "never read",
    ]) + "\n"  # fmt: skip
    assert cli(stdin=TerminalWithCtrlC(typed)) == 0
    out = capsys.readouterr().out
    assert "Use Ctrl + d or /bye to exit." in out  # Ctrl-C at the prompt does not leave
    assert "/set" in out and "/bye" in out and '"""' in out  # help
    assert "Set parameter 'temperature' to '0.25'" in out
    assert "Couldn't set parameter" in out and "top_k" in out and "bogus" in out
    assert "User defined parameters:\ntemperature                    0.25\n" in out  # as `show --parameters` lays it out
    assert "Set system message." in out and "Answer in one word." in out
    assert "architecture        llama" in out and "embedding length    576" in out and "quantization        Q4_1" in out
    assert "Unknown command '/frobnicate'" in out
    assert "Cleared session context" in out


def test_chat_show_set_save_and_load_as_in_ollama(cli, smollm2, capsys, monkeypatch, tmp_path):
    from refllm import store

    monkeypatch.setenv("REFLLM_MODELS", str(tmp_path / "models"))
    typed = "\n".join([
        "/set parameter", "/set parameter num_predict 2", "/set parameter temperature 0", "/set parameter stop a b",
        "/set system Be brief.", "/show parameters", "/show license", "/show template", "/show modelfile",
        "/set think", "/set format xml", "/set format json", "Hi", "/set noformat", "/set nowordwrap",
        "/save my-chat", "/save bad!name", "/load no-such-model", "/load my-chat", "/show system", "/? shortcuts", "/bye",
    ]) + "\n"  # fmt: skip
    assert cli(stdin=FakeTerminal(typed)) == 0
    out = capsys.readouterr().out
    assert "Available Parameters:" in out and "/set parameter num_ctx <int>" in out
    assert "Set parameter 'stop' to 'a, b'" in out and 'stop                           "b"' in out
    assert smollm2.metadata["general.license"] in out  # /show license: the GGUF's
    assert smollm2.metadata["tokenizer.chat_template"] in out  # /show template: the GGUF's
    assert f"FROM {smollm2.path}" in out and "PARAMETER num_predict 2" in out  # /show modelfile: with what /set changed
    assert "does not support thinking" in out  # SmolLM2 has no reasoning markers: think stays off, answers still work
    assert "Invalid or missing format" in out and "Set format to 'json' mode." in out and "Disabled format." in out
    assert "Set 'nowordwrap' mode." in out
    assert "Created new model 'my-chat'" in out and "invalid model name 'bad!name'" in out
    saved = store.resolve("my-chat")  # the session, kept in the store: parameters, system message, conversation
    assert saved.params == {"num_predict": 2, "temperature": 0.0, "stop": ["a", "b"]} and saved.system == "Be brief."
    assert [m["role"] for m in saved.messages] == ["user", "assistant"] and saved.messages[0]["content"] == "Hi"
    assert "Error: model 'no-such-model' not found" in out  # a failed /load keeps the chat going
    assert "Loading model 'my-chat'" in out and out.count("Be brief.") >= 2
    assert f"Loading model 'my-chat'\n>>> Hi\n{saved.messages[1]['content']}\n" in out  # the saved conversation, shown
    assert "Ctrl + c" in out


def test_command_line_options_stay_after_load(cli, capsys, monkeypatch):
    used = []
    answered = types.SimpleNamespace(text="")
    monkeypatch.setattr(run_cli, "stream_answer", lambda model, messages, options, **kw: used.append(options) or answered)
    assert cli("-n", "2", "-o", "repeat_penalty=1.0", stdin=FakeTerminal("/load smollm2\n/show parameters\nHi\n")) == 0
    assert (used[0].num_predict, used[0].repeat_penalty) == (2, 1.0)  # not the defaults of the model /load brought
    assert "User defined parameters:\nnum_predict                    2\n" in capsys.readouterr().out


def test_ctrl_c_during_an_answer_returns_to_the_prompt(cli, capsys, monkeypatch):
    real = run_cli.stream_answer
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C while the first answer streams
        return real(*args, **kwargs)

    monkeypatch.setattr(run_cli, "stream_answer", interrupted_once)
    real_load = run_cli._load

    def load_interrupted(recipe, backend):
        if recipe.name.startswith("gemma3"):
            raise KeyboardInterrupt  # Ctrl-C while /load gemma3 loads
        return real_load(recipe, backend)

    monkeypatch.setattr(run_cli, "_load", load_interrupted)
    assert cli("-n", "1", stdin=FakeTerminal("First\n/load gemma3\nSecond\n")) == 0
    assert capsys.readouterr().out.count("(stopped)") == 2
    assert [m["content"] for m in calls[1] if m["role"] == "user"] == ["Second"]  # the stopped turn is not kept


def test_a_conversation_too_long_for_the_context_says_how_to_go_on(cli, capsys):
    typed = "/set parameter num_ctx 40\n/set parameter num_predict 2\n/set system Be brief.\n" + "word " * 60 + "\n/show system\n"
    assert cli(stdin=FakeTerminal(typed)) == 0
    out = capsys.readouterr().out
    assert "Error: the prompt is" in out and "/set parameter num_ctx N" in out and "/clear" in out
    assert out.endswith(">>> Be brief.\n>>> \n")  # the chat went on (then Ctrl-D)


def test_multi_line_message_reading(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeTerminal('"""first\nsecond\nthird"""\n"""one line"""\nplain\n'
                                                   '/set system """You are\na cat."""\n'))
    assert run_cli.read_message() == "first\nsecond\nthird"
    assert run_cli.read_message() == "one line"
    assert run_cli.read_message() == "plain"
    assert run_cli.read_message() == "/set system You are\na cat."  # Ollama's multi-line system message
    with pytest.raises(EOFError):
        run_cli.read_message()


def test_chat_answers_and_reuses_the_cache_on_the_second_turn(cli, capsys):
    # a short system message keeps the prompt short (SmolLM2's template adds a long default one)
    typed = "/set parameter num_predict 3\n/set parameter temperature 0\n/set system Be brief.\n/set verbose\nHi\nThanks\n"
    assert cli(stdin=FakeTerminal(typed)) == 0
    out, err = capsys.readouterr()
    counts = [int(line.split()[3]) for line in err.splitlines() if line.startswith("prompt eval count:")]
    assert len(counts) == 2
    # the second turn's prompt holds the whole first exchange, but only its new part is evaluated
    assert 0 < counts[1] < counts[0] + 3 + 5


def test_plan_json_prints_the_runtime_plan_without_running(smollm2_gguf, capsys, monkeypatch):
    import json

    monkeypatch.setattr(run_cli, "model_recipe", lambda name: pytest.fail("--plan-json must not load the model"))
    assert main(["run", str(smollm2_gguf), "hello", "--plan-json", "--backend", "numpy", "--num-ctx", "512"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["architecture"], plan["backend"], plan["support_level"], plan["num_ctx"]) == ("llama", "numpy", "generic", 512)
    assert plan["quant_types"]["Q4_1"]["n_tensors"] == 210  # SmolLM2's 30 layers x 7 matrices
