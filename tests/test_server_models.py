"""The real models behind the REST API: SmolLM2 and Gemma 3 through the official clients.

One server for the module, on an empty temporary model store (the catalog models are found
through their PyPI packages). num_parallel is 1, so every request of a model runs in the same
slot and reuses its KV cache for the shared prompt prefix: the tests stay cheap on 2 cores.
Greedy decoding must give the same text on every route, streamed or not, and the same text
as ``model.generate`` called directly.
"""

from __future__ import annotations

import numpy as np
import ollama
import openai
import pytest

from refllm.engine import Engine, EngineSettings
from refllm.server import ServerThread, create_app

N = 4  # tokens per answer
MESSAGES = [{"role": "user", "content": "Name a colour."}]
GREEDY = {"temperature": 0, "num_predict": N}


@pytest.fixture(scope="module")
def server(refllm_server):
    return refllm_server


@pytest.fixture(scope="module")
def oclient(server):
    return ollama.Client(host=server[0])


@pytest.fixture(scope="module")
def aclient(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True)


def direct(server, name: str) -> str:
    """What the loaded model says to MESSAGES when called directly (a fresh KV cache)."""
    engine = server[1]
    model = [m for m in engine.running() if m.name == engine.resolve(name).name][0].model
    return model.generate(MESSAGES, temperature=0, num_predict=N).text


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_chat_on_every_route_agrees(server, oclient, aclient, name):
    answer = oclient.chat(model=name, messages=MESSAGES, options=GREEDY)
    text = answer.message.content
    assert text.strip() and answer.done_reason == "length" and answer.eval_count == N
    streamed = list(oclient.chat(model=name, messages=MESSAGES, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in streamed) == text
    completion = aclient.chat.completions.create(model=name, messages=MESSAGES, temperature=0, max_tokens=N)
    assert completion.choices[0].message.content == text and completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == N and completion.usage.prompt_tokens > 5
    chunks = aclient.chat.completions.create(model=name, messages=MESSAGES, temperature=0, max_tokens=N, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    if name == "smollm2":  # one full prefill more; the routes above shared the slot's cached prompt
        assert direct(server, name) == text


def test_generate_with_logprobs_on_smollm2(oclient):
    options = {**GREEDY, "repeat_penalty": 1.0}  # then greedy picks the raw argmax, which logprobs describe
    answer = oclient.generate(model="smollm2", prompt="Name a colour.", options=options, logprobs=True, top_logprobs=3)
    assert len(answer.logprobs) == N and "".join(lp.token for lp in answer.logprobs) == answer.response
    for entry in answer.logprobs:  # greedy: the chosen token is the most likely one
        assert entry.logprob <= 0 and entry.top_logprobs[0].token == entry.token
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)


def test_embeddings_on_smollm2(oclient, aclient):
    vectors = np.array(oclient.embed(model="smollm2", input=["a red apple", "a red apple", "quantum field theory"]).embeddings)
    assert vectors.shape == (3, 576) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors[0], vectors[1], atol=1e-6) and not np.allclose(vectors[0], vectors[2], atol=1e-3)
    same = aclient.embeddings.create(model="smollm2", input="a red apple", encoding_format="float").data[0].embedding
    assert np.allclose(same, vectors[0], atol=1e-5)


def test_model_management(oclient, aclient, smollm2_gguf):
    names = [m.model for m in oclient.list().models]
    assert {"smollm2:135m", "gemma3:270m"} <= set(names)
    assert "gemma3:270m" in [m.id for m in aclient.models.list().data]
    shown = oclient.show("gemma3")
    assert shown.details.family == "gemma3" and shown.details.quantization_level == "Q4_K_M"
    assert shown.modelinfo["gemma3.block_count"] == 18
    running = [m.model for m in oclient.ps().models]
    assert "smollm2:135m" in running  # loaded by the tests above (module order)

    oclient.copy("smollm2", "my-copy:v1")
    assert "my-copy:v1" in [m.model for m in oclient.list().models]
    oclient.copy("smollm2", "me/pirate:v2")  # OpenAI's owned_by is the namespace, as in Ollama
    owners = {m.id: m.owned_by for m in aclient.models.list().data}
    assert owners["me/pirate:v2"] == "me" and owners["my-copy:v1"] == owners["smollm2:135m"] == "library"
    assert aclient.models.retrieve("me/pirate:v2").owned_by == "me"
    oclient.delete("me/pirate:v2")
    assert oclient.show("my-copy:v1").details.family == "llama"
    oclient.delete("my-copy:v1")
    assert "my-copy:v1" not in [m.model for m in oclient.list().models]
    with pytest.raises(ollama.ResponseError) as err:
        oclient.delete("my-copy:v1")
    assert err.value.status_code == 404
    running = [m.model for m in oclient.ps().models]
    with pytest.raises(ollama.ResponseError) as err:  # listed, but not in the store: a clear 400, not "not found"
        oclient.delete("smollm2")
    assert err.value.status_code == 400 and "built-in" in err.value.error
    assert "smollm2:135m" in [m.model for m in oclient.list().models] and [m.model for m in oclient.ps().models] == running


OLLAMA_SHOW_FIELDS = {"license", "modelfile", "parameters", "template", "system", "renderer", "parser", "details", "messages",
                      "remote_model", "remote_host", "model_info", "projector_info", "tensors", "capabilities",
                      "modified_at", "requires"}


def post_json(server, path: str, body: dict) -> dict:
    """A raw POST, for fields the ollama client (0.6) neither sends nor keeps."""
    import json
    import urllib.request

    request = urllib.request.Request(server[0] + path, data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def show_verbose(server, name: str) -> dict:
    return post_json(server, "/api/show", {"model": name, "verbose": True})


def test_ollama_tool_calls_carry_an_id(server):
    """Ollama's tool calls: {"id": "call_...", "function": {"index", "name", "arguments": {...}}}."""
    add = {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
    reply = post_json(server, "/api/chat", {
        "model": "smollm2", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "tools": [add],
        "tool_choice": "required", "stream": False, "options": {"temperature": 0, "num_predict": 60}})
    calls = reply["message"]["tool_calls"]
    assert calls and [c["function"]["index"] for c in calls] == list(range(len(calls)))
    for call in calls:
        assert call["id"].startswith("call_") and call["function"]["name"] == "add"
        assert isinstance(call["function"]["arguments"], dict)


def test_show_model_info_is_the_gguf_header_for_catalog_and_store_models(server, oclient, smollm2_gguf):
    """/api/show's model_info as Ollama sends it, the same for a catalog model and its store copy:
    the header's values (read here by gguf-py), without general.name and tokenizer.chat_template,
    short arrays in full, long ones null unless verbose."""
    import gguf

    reader = gguf.GGUFReader(smollm2_gguf)
    catalog_info = oclient.show("smollm2:135m").modelinfo
    oclient.copy("smollm2:135m", "info-copy:v1")
    try:
        assert oclient.show("info-copy:v1").modelinfo == catalog_info
        verbose = show_verbose(server, "info-copy:v1")["model_info"]
        for name in ("smollm2:135m", "info-copy:v1"):  # only fields of Ollama's ShowResponse (api/types.go)
            assert set(post_json(server, "/api/show", {"model": name})) <= OLLAMA_SHOW_FIELDS
    finally:
        oclient.delete("info-copy:v1")
    assert "general.name" not in catalog_info and "tokenizer.chat_template" not in catalog_info
    assert catalog_info["general.parameter_count"] == sum(int(np.prod(t.shape)) for t in reader.tensors)
    assert catalog_info["general.languages"] == [str(bytes(reader.fields["general.languages"].parts[i]), "utf-8")
                                                 for i in reader.fields["general.languages"].data]
    assert catalog_info["llama.context_length"] == int(reader.fields["llama.context_length"].parts[-1][0])
    assert catalog_info["tokenizer.ggml.tokens"] is None
    assert len(verbose["tokenizer.ggml.tokens"]) == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert show_verbose(server, "smollm2:135m")["model_info"] == verbose


def test_show_lists_the_tensors(server, smollm2_gguf):
    """/api/show's tensors, as Ollama lists them: name, ggml type, GGUF-order shape (read here by gguf-py)."""
    import gguf

    expected = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape]}
                for t in gguf.GGUFReader(smollm2_gguf).tensors]
    assert post_json(server, "/api/show", {"model": "smollm2:135m"})["tensors"] == expected


def test_ps_reports_the_context_requests_get(oclient):
    """/api/ps's context_length: Ollama's default 4096 (SmolLM2 was trained on 8192), or the
    model's num_ctx PARAMETER; the same context the prompt-length check applies."""
    oclient.generate(model="smollm2", keep_alive="1m")
    oclient.create(model="short:ctx", from_="smollm2:135m", parameters={"num_ctx": 1024})
    try:
        oclient.generate(model="short:ctx", keep_alive="1m")
        running = {m.model: m for m in oclient.ps().models}
        contexts = {name: m.context_length for name, m in running.items()}
        assert contexts["smollm2:135m"] == 4096 and contexts["short:ctx"] == 1024
        listed = {m.model: m for m in oclient.list().models}
        for name in ("smollm2:135m", "short:ctx"):  # a catalog and a store model: the same id and details as /api/tags
            assert running[name].digest == listed[name].digest and running[name].details == listed[name].details
        with pytest.raises(ollama.ResponseError) as err:
            oclient.generate(model="short:ctx", prompt="word " * 1100)
        assert "(num_ctx) is 1024" in err.value.error
    finally:
        oclient.generate(model="short:ctx", keep_alive=0)
        oclient.delete("short:ctx")


def test_show_capabilities(oclient):
    """Every model takes tools (offered through its chat template); "thinking" only where the template
    has reasoning markers. Neither packaged model thinks; a TEMPLATE with <think> does."""
    assert oclient.show("smollm2").capabilities == ["completion", "embedding", "tools"]
    assert oclient.show("gemma3").capabilities == ["completion", "embedding", "tools"]
    oclient.create(model="thinker:test", from_="smollm2:135m", template="{{ .Prompt }}<think>{{ .Thinking }}</think>")
    try:
        assert "thinking" in oclient.show("thinker:test").capabilities
    finally:
        oclient.delete("thinker:test")


def test_blob_upload_create_and_run(oclient, server, tiny_model):
    """A GGUF uploaded as a blob becomes a model whose SYSTEM and PARAMETERs every request gets."""
    import hashlib

    from server_fakes import http_status

    path = tiny_model("llama")
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert http_status(server[0], "HEAD", f"/api/blobs/{digest}") == 404
    assert oclient.create_blob(path) == digest
    assert http_status(server[0], "HEAD", f"/api/blobs/{digest}") == 200
    assert http_status(server[0], "POST", f"/api/blobs/sha256:{'0' * 64}", b"not what the digest says") == 400

    statuses = list(oclient.create(model="tiny:test", files={"tiny.gguf": digest}, system="You are tiny.",
                                   parameters={"num_predict": 3, "temperature": 0}, stream=True))
    assert [s.status for s in statuses].count("success") == 1 and statuses[-1].status == "success"
    shown = oclient.show("tiny:test")
    assert "You are tiny." in shown.modelfile and "num_predict" in shown.parameters
    answer = oclient.chat(model="tiny:test", messages=[{"role": "user", "content": "hi"}])
    assert answer.eval_count == 3 and answer.done_reason == "length"  # the stored PARAMETER applied
    assert oclient.chat(model="tiny:test", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 1}).eval_count == 1
    oclient.delete("tiny:test")

    with pytest.raises(ollama.ResponseError) as err:
        oclient.create(model="bad:test", from_="/etc/passwd")
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as err:
        oclient.pull("no-such-model")
    assert err.value.status_code == 404


def test_concurrent_clients_on_a_real_forward_pass(tiny_model):
    """Three slots running the real transformer at once (a tiny GGUF): every client gets exactly
    what it gets alone, so slots share no KV cache or scratch state."""
    import threading
    from pathlib import Path

    from refllm.engine import ModelRecipe
    from refllm.engine.engine import default_loader

    path = Path(tiny_model("llama"))
    engine = Engine(EngineSettings(num_parallel=3, max_queue=8),
                    resolver=lambda name: ModelRecipe("tiny:latest", path, source="file"), loader=default_loader)
    prompts = [f"story number {i} begins" for i in range(6)]
    options = {"temperature": 0, "num_predict": 12}
    try:
        with ServerThread(create_app(engine)) as url:
            client = ollama.Client(host=url)
            alone = {p: client.generate(model="tiny", prompt=p, raw=True, options=options).response for p in prompts}
            assert len(set(alone.values())) > 1
            together: dict[str, str] = {}

            def ask(prompt: str) -> None:
                pieces = ollama.Client(host=url).generate(model="tiny", prompt=prompt, raw=True, options=options, stream=True)
                together[prompt] = "".join(piece.response for piece in pieces)

            threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert together == alone
    finally:
        engine.close()
