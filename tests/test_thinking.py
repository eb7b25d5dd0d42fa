"""Thinking: reasoning between the family's markers goes to ``thinking`` /
``reasoning_content``, the rest to the content, streamed separately.

Neither SmolLM2 nor Gemma 3 thinks, so a synthetic model does: byte tokens, a chat template
that knows ``<think>`` (and records the variables it was rendered with), and an output
scripted to contain the markers. It runs through the real generation loop, engine, server
and official clients.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import ollama
import openai
import pytest

from refllm.chat.turn import OutputRules
from refllm.engine import Engine, EngineSettings, ModelRecipe
from refllm.errors import InvalidRequest
from refllm.sample import Options
from refllm.server import ServerThread, create_app
from refllm.thinking import ThinkingMarkers, ThinkingSplitter, check_think, thinking_markers

sys.path.insert(0, str(Path(__file__).parent))
from server_fakes import EOS, N_VOCAB, ByteTokenizer, FakeModel, TokenCache, prompt_length  # noqa: E402

REASONING = "The user greets me.\nI should greet back."
ANSWER = "Hello! <b>Nice</b> to meet you."
SCRIPT = f"<think>{REASONING}</think>\n\n{ANSWER}"


# -- the splitter


@pytest.mark.parametrize("text, inside, thinking, content", [
    (SCRIPT, False, REASONING, ANSWER),
    ("\n<think>x</think>y", False, "x", "y"),
    (f"{REASONING}</think>{ANSWER}", True, REASONING, ANSWER),  # the template opened the block
    ("An answer, then <think>not reasoning</think>", False, "", "An answer, then <think>not reasoning</think>"),
    ("<think>never closed", False, "never closed", ""),
    ("no markers at all", False, "", "no markers at all"),
])
def test_splitter_any_chunking(text, inside, thinking, content):
    for size in range(1, 12):
        splitter = ThinkingSplitter(ThinkingMarkers(), inside=inside)
        pieces = [splitter.push(text[i:i + size]) for i in range(0, len(text), size)] + [splitter.flush()]
        assert "".join(t for t, _ in pieces) == thinking
        assert "".join(c for _, c in pieces) == content


def test_think_values():
    assert [check_think(v) for v in (None, True, False, "low", "medium", "high")] == [None, True, False, "low", "medium", "high"]
    for bad in ("yes", 1, "max"):
        with pytest.raises(InvalidRequest, match="think"):
            check_think(bad)
    assert thinking_markers("{% if enable_thinking %}<think>{% endif %}...</think>") == ThinkingMarkers()
    assert thinking_markers("{{ messages }}") is None and thinking_markers(None) is None


# -- a synthetic thinking model


class ThinkingTemplate:
    source = "{# a thinking family: <think> ... </think> #}"

    def __init__(self):
        self.variables: list[dict] = []

    def render(self, messages, tools=None, add_generation_prompt=True, **variables) -> str:
        self.variables.append(variables)
        return "".join(f"[{m['role']}]{m['content']}\n" for m in messages) + "[assistant]"


class ThinkingModel(FakeModel):
    """Says SCRIPT, byte by byte, after any prompt (the prompt ends at "[assistant]")."""

    n_ctx_train = 4096

    def __init__(self):
        super().__init__()
        self.chat_template = ThinkingTemplate()

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True):
        return self.chat_template.render(messages, tools, add_generation_prompt)

    def forward(self, ids, cache: TokenCache) -> np.ndarray:
        cache.tokens.extend(int(i) for i in ids)
        generated = len(cache.tokens) - prompt_length(cache.tokens)
        logits = np.zeros(N_VOCAB, dtype=np.float32)  # [n_vocab]
        script = SCRIPT.encode()
        logits[script[generated] if generated < len(script) else EOS] = 20.0
        return logits


@pytest.fixture(scope="module")
def server(smollm2_gguf):
    models: dict[str, object] = {}

    def resolver(name: str) -> ModelRecipe:
        return ModelRecipe(name if ":" in name else name + ":latest", Path(smollm2_gguf), source="catalog")

    def loader(recipe: ModelRecipe):
        model = ThinkingModel() if recipe.name.startswith("thinker") else FakeModel()
        model.name = recipe.name
        models[recipe.name] = model
        return model

    engine = Engine(EngineSettings(), resolver=resolver, loader=loader)
    with ServerThread(create_app(engine)) as url:
        yield url, models
    engine.close()


HI = [{"role": "user", "content": "Hi"}]


def test_ollama_thinking(server):
    url, models = server
    client = ollama.Client(host=url)
    reply = client.chat(model="thinker", messages=HI, think=True)
    assert reply.message.thinking == REASONING and reply.message.content == ANSWER
    assert models["thinker:latest"].chat_template.variables[-1] == {"enable_thinking": True}

    chunks = list(client.chat(model="thinker", messages=HI, think="high", stream=True))
    assert "".join(c.message.thinking or "" for c in chunks) == REASONING
    assert "".join(c.message.content for c in chunks) == ANSWER
    assert not any(c.message.thinking and c.message.content for c in chunks)  # each chunk is one or the other
    assert models["thinker:latest"].chat_template.variables[-1] == {"enable_thinking": True, "reasoning_effort": "high"}

    reply = client.chat(model="thinker", messages=HI, think=False)
    assert not reply.message.thinking and reply.message.content == ANSWER
    assert models["thinker:latest"].chat_template.variables[-1] == {"enable_thinking": False}

    reply = client.generate(model="thinker", prompt="Hi", think=True)
    assert reply.thinking == REASONING and reply.response == ANSWER

    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="plain", messages=HI, think=True)
    assert err.value.status_code == 400 and "does not support thinking" in err.value.error


def test_openai_reasoning(server):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    message = client.chat.completions.create(model="thinker", messages=HI).choices[0].message
    assert message.content == ANSWER and message.model_extra["reasoning_content"] == REASONING

    deltas = [c.choices[0].delta for c in client.chat.completions.create(model="thinker", messages=HI, stream=True) if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == REASONING
    assert "".join(d.content or "" for d in deltas) == ANSWER

    response = client.responses.create(model="thinker", input="Hi", reasoning={"effort": "low"})
    assert response.output_text == ANSWER
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert reasoning and reasoning[0].content[0].text == REASONING

    with client.responses.stream(model="thinker", input="Hi") as stream:
        events = list(stream)
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == REASONING
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER

    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        client.chat.completions.create(model="plain", messages=HI, reasoning_effort="low")


@pytest.mark.parametrize("hide", [False, True])
def test_cli_prints_thinking_apart(hide):
    from refllm.cli.run import stream_answer

    out = io.StringIO()
    result = stream_answer(ThinkingModel(), "Hi", Options(), out=out, rules=OutputRules(think=True), hide_thinking=hide)
    printed = out.getvalue()
    assert result.text == ANSWER  # what the chat history keeps
    assert printed.endswith(ANSWER + "\n")
    if hide:
        assert "Thinking" not in printed and REASONING not in printed
    else:
        assert printed == f"Thinking...\n{REASONING}\n...done thinking.\n\n{ANSWER}\n"


def test_cli_flags():
    from refllm.cli.main import build_parser, parse_arguments
    from refllm.cli.run import rules_from_args

    def rules(*argv):  # the command line as refllm's main reads it
        args = parse_arguments(build_parser(), ["run", "m", *argv])
        return rules_from_args(args), args

    assert rules()[0] is None
    (r, args) = rules("--think", "why?")  # a bare --think, then the prompt
    assert r.think is True and args.prompt == ["why?"]
    assert rules("--think=false")[0].think is False and rules("--think", "high")[0].think == "high"
    assert rules("--format", "json")[0].format == {"type": "object"}
    assert rules("--format", '{"type": "integer"}')[0].format == {"type": "integer"}
    for bad in (["--format", "yaml"], ["--format", '{"not": {}}']):
        with pytest.raises(InvalidRequest, match="format"):
            rules(*bad)
