"""Huge inputs get a clear error (or a bounded amount of work) at once: never minutes of BPE.

A text of C characters is at least C / L tokens (L = the vocabulary's longest token in
characters), so a prompt with C / L >= num_ctx is refused BEFORE it is tokenized, with the
context check's message and HTTP status (400). The tests make the tokenizer fail loudly if it is
ever handed a huge text, so "refused before tokenizing" is checked, not timed.

Embeddings truncate by default: only a prefix of (n_ctx + margin) x L characters is tokenized,
and the kept ids must equal cutting the encoding of the whole text.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import refllm
from refllm.cli.main import main
from refllm.engine.embeddings import TRUNCATE_MARGIN_TOKENS, embed_texts, text_to_tokenize
from refllm.errors import InvalidRequest
from refllm.tokenizer.tokenizer import Tokenizer

from conftest import GOLDEN, load_tool

HUGE_CHARS = 16_000_000  # what the server's 16 MiB body limit lets through
MODELS = ["smollm2", "gemma3"]  # gpt2-style BPE (HF tokenizers) and SentencePiece


@pytest.fixture(scope="module")
def huge_text() -> str:
    sentence = "The sky is blue because air scatters short wavelengths of sunlight. "
    return (sentence * (HUGE_CHARS // len(sentence) + 1))[:HUGE_CHARS]


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: refllm.load(name) for name in MODELS}


@pytest.fixture
def no_huge_tokenizing(monkeypatch):
    """Tokenizer.encode / encode_chat of more than 1M characters fails the test."""
    encode, encode_chat = Tokenizer.encode, Tokenizer.encode_chat

    def guarded(original):
        def call(self, text, *args, **kwargs):
            assert len(text) < 1_000_000, f"a {len(text)}-character text reached the tokenizer"
            return original(self, text, *args, **kwargs)

        return call

    monkeypatch.setattr(Tokenizer, "encode", guarded(encode))
    monkeypatch.setattr(Tokenizer, "encode_chat", guarded(encode_chat))


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("form", ["raw", "chat template", "messages"])
def test_generate_refuses_a_huge_prompt_before_tokenizing(models, huge_text, no_huge_tokenizing, name, form):
    model = models[name]
    prompt = [{"role": "user", "content": huge_text}] if form == "messages" else huge_text
    with pytest.raises(InvalidRequest, match=r"the prompt is at least \d+ tokens but the context \(num_ctx\) is 4096"):
        model.generate(prompt, raw=form == "raw", num_predict=1)


@pytest.mark.parametrize("name", MODELS)
def test_generate_checks_the_rendered_chat_text_too(models, huge_text, no_huge_tokenizing, name):
    """A system prompt added to chat messages is only seen once rendered: checked there, before tokenizing."""
    with pytest.raises(InvalidRequest, match=r"the prompt is at least \d+ tokens but the context \(num_ctx\) is 4096"):
        models[name].generate([{"role": "user", "content": "Hi"}], system=huge_text[:2_000_000], num_predict=1)


def test_the_bound_is_a_real_lower_bound(models):
    """fewest_tokens = ceil(chars / longest_token_chars) <= the real token count, on texts of long tokens."""
    for name, model in models.items():
        tokenizer = model.tokenizer
        longest = max(tokenizer.vocab.tokens, key=len)
        assert len(longest) == tokenizer.longest_token_chars
        longest_text = tokenizer.decode([tokenizer.token_id(longest)])  # where the bound is tightest
        for text in ("Why is the sky blue?", "  " * 500, "\n" * 300, "word " * 400, "天空" * 100, "😀" * 50, longest_text * 20):
            assert tokenizer.fewest_tokens(len(text)) <= len(tokenizer.encode(text, add_special=False)), (name, text[:20])


@pytest.mark.parametrize("name", MODELS)
def test_a_prompt_just_over_the_context_gets_the_same_error(models, name):
    """The text bound cannot catch this one (500 characters): the count after tokenizing does, same wording."""
    with pytest.raises(InvalidRequest, match=r"the prompt is \d+ tokens but the context \(num_ctx\) is 64"):
        models[name].generate("Why is the sky blue? " * 25, raw=True, num_predict=1, num_ctx=64)


# ----------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from refllm.engine import Engine, EngineSettings
    from refllm.server import create_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFLLM_MODELS", str(tmp_path_factory.mktemp("models")))
        engine = Engine(EngineSettings(num_parallel=1, max_queue=4))
        yield create_app(engine).test_client()
        engine.close()


def _requests(model: str, text: str) -> dict[str, dict]:
    message = [{"role": "user", "content": text}]
    return {
        "/api/generate": {"model": model, "prompt": text, "stream": False},
        "/api/generate raw": {"model": model, "prompt": text, "raw": True, "stream": False},
        "/api/generate format": {"model": model, "prompt": text, "format": "json", "stream": False},
        "/api/generate system": {"model": model, "prompt": "Hi", "system": text, "stream": False},
        "/api/generate system format": {"model": model, "prompt": "Hi", "system": text, "format": "json", "stream": False},
        "/api/chat system": {"model": model, "messages": [{"role": "system", "content": text}, {"role": "user", "content": "Hi"}],
                             "stream": False},
        "/api/chat": {"model": model, "messages": message, "stream": True},
        "/v1/chat/completions": {"model": model, "messages": message},
        "/v1/completions": {"model": model, "prompt": text},
    }


@pytest.mark.parametrize("name", MODELS)
def test_server_routes_answer_a_16_mb_prompt_with_a_clear_400(client, huge_text, no_huge_tokenizing, name):
    for route, body in _requests(name, huge_text).items():
        response = client.post(route.split()[0], json=body)
        assert response.status_code == 400, route
        error = response.get_json()["error"]
        message = error["message"] if isinstance(error, dict) else error  # OpenAI: {"message": ...}
        assert "the prompt is at least" in message and "num_ctx" in message, (route, message)


# ----------------------------------------------------------------------------- CLI


class Stdin(io.StringIO):
    def __init__(self, text: str, terminal: bool):
        super().__init__(text)
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("piped", [False, True])
def test_refllm_run_refuses_a_huge_prompt_in_one_line(huge_text, no_huge_tokenizing, capsys, monkeypatch, name, piped):
    """`refllm run NAME "<16 MB>"` and `refllm run NAME < 16MB.txt`."""
    monkeypatch.setattr(sys, "stdin", Stdin(huge_text if piped else "", terminal=not piped))
    assert main(["run", name] + ([] if piped else [huge_text])) == 1
    err = capsys.readouterr().err
    assert "the prompt is at least" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- embeddings


def _realistic_texts() -> dict[str, str]:
    bench = load_tool("bench_spm_tokenizer")
    golden_long = __import__("json").loads((GOLDEN / "tokens" / "gemma3_spm.json").read_text(encoding="utf-8"))["long"]
    code = "".join(f"{'    ' * (i % 6)}if value_{i} > limit:  # check {i}\n" for i in range(5000))
    return {
        "English": bench.prose(bench.ENGLISH, 150_000, " "),
        "CJK": bench.prose(bench.CJK, 450_000, ""),  # UTF-8 bytes: 150k characters
        "indented code": code,
        "golden mix": "\n\n".join(c["text"] for c in golden_long) * 25,
    }


@pytest.mark.parametrize("name", MODELS)
def test_truncated_embedding_ids_equal_cutting_the_whole_encoding(models, name):
    model = models[name]
    for label, text in _realistic_texts().items():
        whole = model.tokenize(text)
        for n_ctx in (64, 300, 1400):
            prefix = text_to_tokenize(model, text, n_ctx, truncate=True)
            assert len(prefix) < len(text), (label, n_ctx)  # the prefix path is what runs
            assert model.tokenize(prefix)[:n_ctx] == whole[:n_ctx], (label, n_ctx)
            assert len(prefix) == (n_ctx + TRUNCATE_MARGIN_TOKENS) * model.tokenizer.longest_token_chars


@pytest.mark.parametrize("name", MODELS)
def test_embedding_a_16_mb_input(models, huge_text, no_huge_tokenizing, monkeypatch, name):
    """truncate=true: n_ctx tokens are embedded; truncate=false: the context error, before tokenizing."""
    model = models[name]
    seen: list[list[int]] = []
    monkeypatch.setattr(model, "hidden_states", lambda ids: seen.append(list(ids)) or np.ones((len(ids), 4), np.float32), raising=False)
    vectors, n_tokens = embed_texts(model, [huge_text], options={"num_ctx": 128})
    assert n_tokens == 128 and seen[0] == model.tokenize(huge_text[:10_000])[:128]
    assert len(vectors) == 1 and np.isclose(np.linalg.norm(vectors[0]), 1.0)
    with pytest.raises(InvalidRequest, match=r"input length at least \d+ tokens exceeds the context length 128"):
        embed_texts(model, [huge_text], truncate=False, options={"num_ctx": 128})
