"""The REST API end to end: a real waitress server on 127.0.0.1, driven by the official
``ollama`` and ``openai`` clients and by raw HTTP, on small deterministic fake models.

The fake models (tests/server_fakes.py) run through the real generation loop; what they
should say is recomputed here independently, by a plain greedy loop over their logits.
Real GGUF models through the same server: tests/test_server_models.py.
"""

from __future__ import annotations

import base64
from http.client import HTTPConnection
import json
import math
import socket
import threading
import time
import urllib.parse

import numpy as np
import ollama
import openai
import pytest

from refllm.engine import EngineSettings
from refllm.server import ServerSettings, ServerThread, create_app
from server_fakes import BOS, EOS, next_token_logits

GREEDY = {"temperature": 0, "repeat_penalty": 1.0}


# -- the independent reference: greedy decoding straight from the fake's logits


def reference(prompt_text: str, max_new: int = 100) -> tuple[str, list[list[tuple[int, float]]]]:
    """Greedy text and, per step, [(token, logprob)] best first, for a prompt already rendered."""
    tokens, out, steps = [BOS, *prompt_text.encode()], [], []
    while len(out) < max_new:
        logits = next_token_logits(tokens, 12).astype(np.float64)
        log_probs = logits - (np.log(np.sum(np.exp(logits - logits.max()))) + logits.max())
        order = np.argsort(-log_probs, kind="stable")
        token = int(order[0])
        if token == EOS:
            break
        steps.append([(int(i), float(log_probs[i])) for i in order[:3]])
        out.append(token)
        tokens.append(token)
    return bytes(out).decode(), steps


def token_text(token_id: int) -> str:
    return chr(token_id) if token_id < 256 else ("<s>" if token_id == BOS else "</s>")


def chat_prompt(*messages: tuple[str, str]) -> str:
    return "".join(f"[{role}]{content}\n" for role, content in messages) + "[assistant]"


# -- one server for the module


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    from server_fakes import fake_engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFLLM_MODELS", str(tmp_path_factory.mktemp("models")))  # not the user's store
        engine, loaded = fake_engine(smollm2_gguf, EngineSettings(num_parallel=2, max_queue=16), delay_s=0.02)
        app = create_app(engine, ServerSettings(origins=["https://allowed.example"]))
        with ServerThread(app) as url:
            yield url, engine, loaded
        engine.close()


@pytest.fixture(scope="module")
def url(server) -> str:
    return server[0]


@pytest.fixture(scope="module")
def oclient(url) -> ollama.Client:
    return ollama.Client(host=url)


@pytest.fixture(scope="module")
def aclient(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True)


def http(url: str, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, headers, body bytes) of one raw HTTP request."""
    parts = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


# -- health


def test_health_and_version(url):
    status, headers, body = http(url, "GET", "/")
    assert status == 200 and body == b"refllm is running"
    assert http(url, "HEAD", "/")[0] == 200
    status, _, body = http(url, "GET", "/api/version")
    assert status == 200 and isinstance(json.loads(body)["version"], str)


# -- Ollama API with the official client


def test_ollama_generate_non_streaming(oclient):
    expected, _ = reference(chat_prompt(("user", "hello")))
    response = oclient.generate(model="fake", prompt="hello", options=GREEDY, stream=False)
    assert response.response == expected
    assert response.done and response.done_reason == "stop"
    assert response.eval_count == len(expected.encode()) + 1  # + the end-of-generation token
    assert response.total_duration >= response.eval_duration > 0 and response.prompt_eval_count >= 1


def test_ollama_generate_raw_and_system(oclient):
    raw = oclient.generate(model="fake", prompt="xyz", raw=True, options={**GREEDY, "num_predict": 20})
    assert raw.response == reference("xyz", max_new=20)[0]
    expected, _ = reference(chat_prompt(("system", "be brief"), ("user", "hi")))
    assert oclient.generate(model="fake", prompt="hi", system="be brief", options=GREEDY).response == expected


def test_ollama_generate_with_a_template(oclient):
    template = "{{ if .System }}<{{ .System }}>{{ end }}Q: {{ .Prompt }} A:"
    expected, _ = reference("<sys>Q: hi A:", max_new=10)
    answer = oclient.generate(model="fake", prompt="hi", system="sys", template=template, options={**GREEDY, "num_predict": 10})
    assert answer.response == expected


def test_ollama_generate_streaming(oclient):
    expected, _ = reference(chat_prompt(("user", "stream me")))
    chunks = list(oclient.generate(model="fake", prompt="stream me", options=GREEDY, stream=True))
    assert "".join(c.response for c in chunks) == expected
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].done_reason == "stop" and chunks[-1].eval_count == len(expected) + 1


def test_prompt_eval_count_is_the_whole_prompt_even_when_cached(oclient):
    """Ollama counts every prompt token, cached or not (llama.cpp's cache_n + prompt_n)."""
    whole = len(chat_prompt(("user", "count my tokens"))) + 1  # + BOS
    counts = [oclient.generate(model="fake", prompt="count my tokens", options={"num_predict": 2}).prompt_eval_count
              for _ in range(3)]  # two slots: the later requests reuse a cached prompt
    assert counts == [whole] * 3


def test_openai_routes_sample_with_openai_defaults(aclient, oclient):
    """Without temperature and top_p, /v1 samples with OpenAI's defaults (1 and 1), as Ollama's /v1
    does, not with the model's own (0.8 and 0.9)."""
    ask = [{"role": "user", "content": "hello"}]
    openai_defaults = oclient.chat(model="fake", messages=ask, options={"seed": 5, "temperature": 1.0, "top_p": 1.0, "num_predict": 12})
    model_defaults = oclient.chat(model="fake", messages=ask, options={"seed": 5, "num_predict": 12})
    assert openai_defaults.message.content != model_defaults.message.content  # the test can tell them apart
    chat = aclient.chat.completions.create(model="fake", messages=ask, seed=5, max_tokens=12)
    assert chat.choices[0].message.content == openai_defaults.message.content
    response = aclient.responses.create(model="fake", input="hello", max_output_tokens=12)
    assert response.temperature == 1.0 and response.top_p == 1.0


def test_ollama_num_predict_gives_done_reason_length(oclient):
    response = oclient.generate(model="fake", prompt="hello", options={**GREEDY, "num_predict": 3})
    assert response.response == reference(chat_prompt(("user", "hello")))[0][:3]
    assert response.done_reason == "length" and response.eval_count == 3


def test_seed_reproduces_sampled_output_and_stop_cuts_it(oclient, aclient):
    sampled = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": 42, "num_predict": 12}
    first = oclient.generate(model="fake", prompt="hello", options=sampled).response
    assert oclient.generate(model="fake", prompt="hello", options=sampled).response == first
    expected, _ = reference(chat_prompt(("user", "hello")))
    stop = expected[3:5]
    cut = oclient.generate(model="fake", prompt="hello", options={**GREEDY, "stop": [stop]})
    assert cut.response == expected[: expected.index(stop)] and cut.done_reason == "stop"
    completion = aclient.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hello"}],
                                                 temperature=0, stop=stop, seed=1)
    assert completion.choices[0].message.content == expected[: expected.index(stop)]


def test_ollama_chat_roles_are_case_insensitive(oclient):
    """Ollama lower-cases a message's role when it reads it."""
    greedy = {**GREEDY, "num_predict": 4}
    upper = oclient.chat(model="fake", messages=[{"role": "USER", "content": "hello"}], options=greedy)
    assert upper.message.content == reference(chat_prompt(("user", "hello")))[0][:4]


def test_ollama_chat(oclient):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "more"}]
    expected, _ = reference(chat_prompt(("user", "hi"), ("assistant", "yo"), ("user", "more")))
    response = oclient.chat(model="fake", messages=messages, options=GREEDY)
    assert response.message.role == "assistant" and response.message.content == expected
    streamed = list(oclient.chat(model="fake", messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in streamed) == expected and streamed[-1].done


def test_ollama_logprobs(oclient, url):
    _, steps = reference(chat_prompt(("user", "hello")))
    response = oclient.generate(model="fake", prompt="hello", options=GREEDY, logprobs=True, top_logprobs=3)
    assert len(response.logprobs) == len(steps)
    for got, step in zip(response.logprobs, steps):
        assert got.token == chr(step[0][0]) and got.logprob == pytest.approx(step[0][1], abs=1e-4)
        assert [(t.token, round(t.logprob, 4)) for t in got.top_logprobs] == [(token_text(i), round(lp, 4)) for i, lp in step]
    _, _, payload = http(url, "POST", "/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hello"}],
                                                   "options": GREEDY, "logprobs": True, "stream": False})
    first = json.loads(payload)["logprobs"][0]  # the client's model does not keep "bytes"
    assert first["bytes"] == [steps[0][0][0]] and first["top_logprobs"] == []


def test_ollama_embed(oclient):
    response = oclient.embed(model="fake", input=["hello", "a longer text"], dimensions=5)
    vectors = np.array(response.embeddings)
    assert vectors.shape == (2, 5) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    legacy = oclient.embeddings(model="fake", prompt="hello")
    full = np.array(oclient.embed(model="fake", input="hello").embeddings[0])
    assert np.allclose(legacy.embedding, full, atol=1e-6)
    assert np.allclose(full[:5] / np.linalg.norm(full[:5]), vectors[0], atol=1e-5)  # dimensions = cut, then normalise


def test_embedding_routes_without_input_only_load_the_model(oclient, url):
    """Ollama's /api/embed without input (or with "") and /api/embeddings without a prompt load
    the model and answer an empty list (its preload request), not an error."""
    oclient.generate(model="other", keep_alive=0)
    assert oclient.embed(model="other", input="").embeddings == []
    assert "other:latest" in [m.model for m in oclient.ps().models]
    for body in ({"model": "fake"}, {"model": "fake", "input": []}):
        status, _, payload = http(url, "POST", "/api/embed", body)
        assert status == 200 and json.loads(payload)["embeddings"] == []
    for body in ({"model": "fake"}, {"model": "fake", "prompt": ""}):
        status, _, payload = http(url, "POST", "/api/embeddings", body)
        assert status == 200 and json.loads(payload) == {"embedding": []}
    assert http(url, "POST", "/api/embed", {"model": "nope"})[0] == 404
    oclient.generate(model="other", keep_alive=0)


def test_ollama_list_show_ps(oclient, smollm2_gguf):
    import gguf

    names = [m.model for m in oclient.list().models]
    assert "smollm2:135m" in names
    shown = oclient.show("smollm2")
    reader = gguf.GGUFReader(smollm2_gguf)  # an independent reading of the file header
    arch_field = reader.fields["general.architecture"]
    assert shown.details.family == bytes(arch_field.parts[arch_field.data[0]]).decode()
    assert shown.modelinfo["llama.block_count"] == int(reader.fields["llama.block_count"].parts[-1][0])
    assert "{%" in shown.template
    oclient.generate(model="fake", prompt="hi", options={"num_predict": 1}, keep_alive="1h")
    running = {m.model: m for m in oclient.ps().models}
    assert "fake:latest" in running
    expires_in = running["fake:latest"].expires_at.timestamp() - time.time()
    assert 3000 < expires_in <= 3600


def test_model_info_takes_every_shape_of_metadata(tmp_path):
    """/api/show's model_info as JSON for nested, string and long arrays (a nested one was a 500)."""
    import gguf

    from refllm.gguf import read
    from refllm.store import model_info

    path = tmp_path / "metadata.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_array("t.nested", [[1, 2], [3, 4, 5]])
    writer.add_array("t.strings", ["a", "b"])
    writer.add_array("t.long", list(range(2000)))
    writer.add_float32("t.half", 0.5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = json.loads(json.dumps(model_info(read(path))))
    assert info == {"general.parameter_count": 0, "general.architecture": "llama", "t.nested": [[1, 2], [3, 4, 5]],
                    "t.strings": ["a", "b"], "t.long": None, "t.half": 0.5}
    assert model_info(read(path), verbose=True)["t.long"] == list(range(2000))


def test_ollama_load_and_unload_without_a_prompt(oclient):
    loaded = oclient.generate(model="other", keep_alive="10m")
    assert loaded.done and loaded.done_reason == "load"
    assert "other:latest" in [m.model for m in oclient.ps().models]
    unloaded = oclient.generate(model="other", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "other:latest" not in [m.model for m in oclient.ps().models]


def test_ollama_client_errors(oclient):
    with pytest.raises(ollama.ResponseError) as err:
        oclient.generate(model="nosuchmodel", prompt="hi")
    assert err.value.status_code == 404 and "nosuchmodel" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oclient.generate(model="fake", prompt="hi", options={"no_such_option": 1})
    assert err.value.status_code == 400 and "no_such_option" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oclient.chat(model="fake", messages=[{"role": "user", "content": "hi"}], format={"type": "string", "not": {}})
    assert err.value.status_code == 400 and "format" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oclient.chat(model="fake", messages=[{"role": "user", "content": "hi"}], think=True)
    assert err.value.status_code == 400 and "think" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        oclient.generate(model="fake", prompt="hi", images=[base64.b64encode(b"\x89PNG").decode()])
    assert err.value.status_code == 400 and "image" in err.value.error


# -- OpenAI API with the official client (strict response validation)


def test_openai_chat(aclient):
    expected, steps = reference(chat_prompt(("system", "sys"), ("user", "hello")))
    completion = aclient.chat.completions.create(
        model="fake", messages=[{"role": "developer", "content": "sys"}, {"role": "user", "content": "hello"}],
        temperature=0, frequency_penalty=0, logprobs=True, top_logprobs=2)
    choice = completion.choices[0]
    assert choice.message.content == expected and choice.finish_reason == "stop" and choice.index == 0
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.usage.completion_tokens == len(expected) + 1
    assert completion.usage.prompt_tokens == len(chat_prompt(("system", "sys"), ("user", "hello"))) + 1
    first = choice.logprobs.content[0]
    assert first.token == chr(steps[0][0][0]) and first.logprob == pytest.approx(steps[0][0][1], abs=1e-4)
    assert [t.token for t in first.top_logprobs] == [chr(i) for i, _ in steps[0][:2]]


def test_openai_chat_streaming_with_usage(aclient):
    expected, _ = reference(chat_prompt(("user", "hello")))
    chunks = list(aclient.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hello"}],
                                                  temperature=0, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected[:5]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


def test_openai_completions(aclient):
    expected, steps = reference(chat_prompt(("user", "hello")))
    completion = aclient.completions.create(model="fake", prompt="hello", temperature=0, max_tokens=4, logprobs=2)
    choice = completion.choices[0]
    assert choice.text == expected[:4] and choice.finish_reason == "length"
    assert choice.logprobs.tokens == list(expected[:4])
    assert choice.logprobs.token_logprobs[0] == pytest.approx(steps[0][0][1], abs=1e-4)
    assert list(choice.logprobs.top_logprobs[0]) == [chr(i) for i, _ in steps[0][:2]]
    assert choice.logprobs.text_offset == [0, 1, 2, 3]
    # OpenAI streams finish_reason: null until the last chunk, which the SDK's strict Completion type refuses
    lenient = openai.OpenAI(base_url=aclient.base_url, api_key="unused", max_retries=0)
    streamed = list(lenient.completions.create(model="fake", prompt="hello", temperature=0, max_tokens=4, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == expected[:4]


def test_openai_responses(aclient):
    expected, _ = reference(chat_prompt(("system", "be nice"), ("user", "hello")))
    response = aclient.responses.create(model="fake", input="hello", instructions="be nice", temperature=0)
    assert response.output_text == expected and response.status == "completed"
    assert response.id.startswith("resp_") and response.output[0].id.startswith("msg_")  # OpenAI's spelling
    assert response.usage.output_tokens == len(expected) + 1
    events = list(aclient.responses.create(model="fake", input=[{"role": "user", "content": "hello"}], temperature=0,
                                           instructions="be nice", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == "response.completed" and "response.output_text.done" in kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == expected
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_openai_embeddings_and_models(aclient, oclient):
    result = aclient.embeddings.create(model="fake", input=["hello", "world"], encoding_format="float")
    assert [d.index for d in result.data] == [0, 1] and result.usage.prompt_tokens == 12
    ollama_vectors = oclient.embed(model="fake", input=["hello", "world"]).embeddings
    assert np.allclose([d.embedding for d in result.data], ollama_vectors, atol=1e-6)
    # the SDK's own default is base64, decoded after parsing (so not with strict validation)
    lenient = openai.OpenAI(base_url=aclient.base_url, api_key="unused", max_retries=0)
    short = lenient.embeddings.create(model="fake", input="hello", dimensions=3)
    full = np.array(ollama_vectors[0][:3])
    assert np.allclose(short.data[0].embedding, full / np.linalg.norm(full), atol=1e-6)
    listed = {m.id: m for m in aclient.models.list().data}
    assert "smollm2:135m" in listed
    assert aclient.models.retrieve("smollm2:135m").owned_by == "library"
    # every name the generation routes take, as Ollama answers it: the id asked for
    short = aclient.models.retrieve("smollm2")
    assert short.id == "smollm2" and short.created == listed["smollm2:135m"].created
    with pytest.raises(openai.NotFoundError):
        aclient.models.retrieve("nosuchmodel")


def test_reasoning_effort_minimal_is_low():
    """Ollama's /v1 reads "minimal" as "low" (it has no minimal tier), "none" as thinking off."""
    from refllm.server.openai_api import output_rules

    assert output_rules({}, None, "minimal").think == "low"
    assert output_rules({}, None, "none").think is False
    assert output_rules({}, None, None).think is None


def test_openai_client_errors(aclient):
    with pytest.raises(openai.NotFoundError):
        aclient.chat.completions.create(model="nosuchmodel", messages=[{"role": "user", "content": "hi"}])
    for extra in ({"tools": [{"type": "function", "function": {"parameters": {}}}]},
                  {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"uniqueItems": True}}}},
                  {"n": 2}, {"reasoning_effort": "low"}, {"reasoning_effort": "minimal"}):
        with pytest.raises(openai.BadRequestError) as err:
            aclient.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], **extra)
        assert next(iter(extra)) in err.value.message


def test_openai_error_param_names_the_field(aclient):
    """OpenAI's error ``param``: the request field that was wrong, null when none is."""
    hi = [{"role": "user", "content": "hi"}]
    for fields, param in (({"messages": hi, "temperature": 5}, "temperature"), ({"messages": []}, "messages"),
                          ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
                          ({"messages": hi, "reasoning_effort": "max"}, "reasoning_effort"),
                          ({"messages": hi, "model": ""}, "model")):
        with pytest.raises(openai.BadRequestError) as err:
            aclient.chat.completions.create(**{"model": "fake"} | fields)
        assert err.value.param == param, err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        aclient.responses.create(model="fake", input="hi", reasoning={"effort": "max"})
    assert err.value.param == "reasoning.effort"
    with pytest.raises(openai.NotFoundError) as err:
        aclient.chat.completions.create(model="nosuchmodel", messages=hi)
    assert err.value.param is None  # as OpenAI's model_not_found


# -- raw HTTP: status codes, error bodies, framing


@pytest.mark.parametrize("path, body, status, needle", [
    ("/api/generate", None, 400, "model"),
    ("/api/generate", {"model": "fake", "prompt": 5}, 400, "prompt"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "options": []}, 400, "options"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "options": {"temperature": "hot"}}, 400, "temperature"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "keep_alive": "soon"}, 400, "duration"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "options": {"seed": -5}}, 400, "seed"),  # was a 500 (-1 means random)
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "seed": -5}, 400, "seed"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "top_logprobs": 99, "logprobs": True}, 400, "top_logprobs"),
    ("/api/generate", {"model": "../../etc/passwd", "prompt": "hi"}, 400, "model"),
    ("/api/generate", {"model": "/tmp/x.gguf", "prompt": "hi"}, 400, "model"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "template": 5}, 400, "template"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "template": "{{ if .Prompt }}"}, 400, "template"),
    ("/api/generate", {"model": "nope", "prompt": "hi"}, 404, "nope"),
    ("/api/generate", {"model": "fake", "prompt": "hi", "raw": True, "system": "be nice"}, 400, "raw"),  # as Ollama: was ignored
    ("/api/generate", {"model": "fake", "prompt": "hi", "raw": True, "template": "{{ .Prompt }}"}, 400, "raw"),
    ("/api/chat", {"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("/api/chat", {"model": "fake", "messages": "hi"}, 400, "messages"),
    ("/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, "tools"),
    ("/api/chat", {"model": "fake", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": 5}]}]}, 400, "tool_calls"),  # was a 500
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}]}, 400, "arguments"),
    ("/api/embed", {"model": "fake", "input": 5}, 400, "input"),
    ("/api/embed", {"model": "fake", "input": [1, 2]}, 400, "input"),
    ("/api/embed", {"model": "fake", "input": "x", "dimensions": 0}, 400, "dimensions"),
    ("/api/show", {"model": "nope"}, 404, "nope"),
    ("/api/copy", {"source": "nope", "destination": "x"}, 404, "nope"),
    ("/v1/chat/completions", {"model": "fake", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, "image"),
    ("/v1/completions", {"model": "fake", "prompt": [1, 2, 3]}, 400, "prompt"),
    ("/v1/embeddings", {"model": "fake", "input": [[1, 2]]}, 400, "input"),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user"}]}, 400, "content"),  # OpenAI and Ollama's /v1 refuse it
    ("/v1/embeddings", {"model": "fake", "input": []}, 400, "input"),  # OpenAI and Ollama's /v1 refuse it
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 5}, 400, "frequency_penalty"),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, 400, "temperature"),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"]}, 400, "modalities"),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "audio": {"voice": "alloy", "format": "wav"}}, 400, "audio"),
    ("/api/push", {"model": "nope"}, 404, "nope"),
    ("/api/push", {"model": "fake"}, 501, "registry"),  # refllm has no registry: a clear answer, not "no route"
    ("/v1/responses", {"model": "fake", "input": 5}, 400, "input"),
])
def test_bad_requests_get_a_json_error(url, path, body, status, needle):
    got, headers, payload = http(url, "POST", path, body)
    assert got == status and headers["content-type"].startswith("application/json")
    error = json.loads(payload)["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert needle in message and "Traceback" not in message


def test_malformed_bodies(url):
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"', b'{"model": ' + b"[" * 100000 + b"]" * 100000 + b"}"):
        status, _, payload = http(url, "POST", "/api/generate", raw=raw)
        assert status == 400 and "error" in json.loads(payload)


def test_unknown_routes_and_methods(url):
    status, _, payload = http(url, "GET", "/api/nothing")
    assert status == 404 and "error" in json.loads(payload)
    status, _, payload = http(url, "GET", "/api/generate")
    assert status == 405 and "error" in json.loads(payload)


def test_body_size_limit_is_413(url):
    status, _, payload = http(url, "POST", "/api/generate", raw=b'{"prompt": "' + b"x" * (17 * 1024 * 1024) + b'"}')
    assert status == 413 and "too large" in json.loads(payload)["error"]


def test_ndjson_framing(url):
    status, headers, payload = http(url, "POST", "/api/generate", {"model": "fake", "prompt": "hello", "options": GREEDY})
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    lines = payload.decode().split("\n")
    assert lines[-1] == "" and all(lines[:-1])
    objects = [json.loads(line) for line in lines[:-1]]
    assert all(o["model"] == "fake" and o["created_at"].endswith("Z") for o in objects)
    assert objects[-1]["done"] is True and not any(o["done"] for o in objects[:-1])
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert isinstance(objects[-1][key], int)


def test_sse_framing(url):
    status, headers, payload = http(url, "POST", "/v1/chat/completions",
                                    {"model": "fake", "messages": [{"role": "user", "content": "hello"}], "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = payload.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ") and json.loads(event[6:])["object"] == "chat.completion.chunk"
    status, _, payload = http(url, "POST", "/v1/responses", {"model": "fake", "input": "hello", "stream": True})
    blocks = [b for b in payload.decode().split("\n\n") if b]
    assert all(b.startswith("event: ") and "\ndata: " in b for b in blocks)
    assert json.loads(blocks[-1].split("data: ", 1)[1])["type"] == "response.completed"


def test_cors(url):
    status, headers, _ = http(url, "GET", "/api/tags", headers={"Origin": "https://allowed.example"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://allowed.example"
    status, headers, _ = http(url, "GET", "/api/tags", headers={"Origin": "http://localhost:3000"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    status, headers, _ = http(url, "OPTIONS", "/api/chat", headers={"Origin": "https://allowed.example",
                                                                    "Access-Control-Request-Method": "POST"})
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    status, headers, payload = http(url, "GET", "/api/tags", headers={"Origin": "https://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in headers and "REFLLM_ORIGINS" in json.loads(payload)["error"]


def test_bearer_token(smollm2_gguf):
    from server_fakes import fake_engine

    engine, _ = fake_engine(smollm2_gguf)
    app = create_app(engine, ServerSettings(api_key="s3cret"))
    with ServerThread(app) as url:
        assert http(url, "GET", "/")[0] == 200  # health needs no token
        status, headers, _ = http(url, "GET", "/api/tags")
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert http(url, "GET", "/api/tags", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert http(url, "GET", "/api/tags", headers={"Authorization": "Bearer s3cret"})[0] == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0, _strict_response_validation=True)
        assert client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=url).list()
        assert err.value.status_code == 401
        assert ollama.Client(host=url, headers={"Authorization": "Bearer s3cret"}).list().models
    engine.close()


def test_openapi_describes_every_route(url, server):
    status, _, payload = http(url, "GET", "/openapi.json")
    spec = json.loads(payload)
    assert status == 200 and spec["openapi"].startswith("3.")
    app_routes = set()
    for line in ("/", "/api/version", "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tags",
                 "/api/show", "/api/ps", "/api/copy", "/api/delete", "/api/create", "/api/pull", "/api/push", "/api/blobs/{digest}",
                 "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/models/{model}", "/v1/responses"):
        app_routes.add(line)
    assert app_routes <= set(spec["paths"])


# -- concurrency, queue bound, disconnects


def test_concurrent_clients_get_their_own_answers(url):
    prompts = [f"prompt number {i}" for i in range(6)]
    expected = {p: reference(chat_prompt(("user", p)))[0] for p in prompts}
    assert len(set(expected.values())) == len(prompts)  # different prompts, different answers
    results: dict[str, str] = {}

    def ask(prompt: str) -> None:
        client = ollama.Client(host=url)
        results[prompt] = "".join(c.response for c in client.generate(model="fake", prompt=prompt, options=GREEDY, stream=True))

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == expected


def _open_stream(url: str, body: dict) -> socket.socket:
    """Send a streaming request on a raw socket and wait for the first line of the body."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    received = b""
    while b"\r\n\r\n" not in received or b'"done": false' not in received:
        received += sock.recv(4096)
    return sock


def test_full_queue_is_503_and_disconnect_stops_generation(smollm2_gguf):
    from server_fakes import fake_engine

    engine, loaded = fake_engine(smollm2_gguf, EngineSettings(num_parallel=1, max_queue=1), delay_s=0.02)
    with ServerThread(create_app(engine)) as url:
        long_request = {"model": "slow", "prompt": "go", "options": {"num_predict": 300}}
        running = _open_stream(url, long_request)  # holds the only slot
        waiting = threading.Thread(target=lambda: http(url, "POST", "/api/generate", {**long_request, "stream": False, "options": {"num_predict": 2}}))
        waiting.start()
        lm = [m for m in engine.running() if m.name == "slow:latest"][0]
        deadline = time.time() + 10
        while lm.queue.waiting < 1 and time.time() < deadline:
            time.sleep(0.01)
        status, _, payload = http(url, "POST", "/api/generate", long_request)
        assert status == 503 and "busy" in json.loads(payload)["error"]
        status, _, payload = http(url, "POST", "/v1/completions", {"model": "slow", "prompt": "x"})
        assert status == 503 and "busy" in json.loads(payload)["error"]["message"]

        model = loaded["slow:latest"][0]
        running.close()  # the client goes away mid-stream
        waiting.join(30)  # the queued request gets the slot and finishes
        calls = model.forward_calls
        time.sleep(0.3)
        assert model.forward_calls == calls  # nothing is generating any more
        assert calls < 100  # far fewer than the 300 tokens asked for
        assert lm.queue.idle and lm.users == 0
    engine.close()


def test_error_mid_stream_is_sent_in_band(server, url):
    _, engine, loaded = server
    http(url, "POST", "/api/generate", {"model": "fake", "prompt": "warm", "stream": False, "options": {"num_predict": 1}})
    model = loaded["fake:latest"][-1]
    original = model.forward

    def failing_forward(ids, cache):
        if len(ids) == 1 and len(cache.tokens) > 40:
            raise RuntimeError("the model failed")
        return original(ids, cache)

    model.forward = failing_forward
    try:
        status, _, payload = http(url, "POST", "/api/generate", {"model": "fake", "prompt": "a prompt to fail on", "options": GREEDY})
        lines = [json.loads(line) for line in payload.decode().splitlines()]
        assert status == 200 and "the model failed" in lines[-1]["error"] and lines[0]["done"] is False
        status, _, payload = http(url, "POST", "/v1/chat/completions", {"model": "fake", "stream": True,
                                   "messages": [{"role": "user", "content": "a prompt to fail on"}]})
        events = payload.decode().split("\n\n")
        assert "the model failed" in json.loads(events[-3][6:])["error"]["message"] and events[-2] == "data: [DONE]"
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True)
        responses = list(client.responses.create(model="fake", input="a prompt to fail on", stream=True))
        assert [e.type for e in responses[-2:]] == ["error", "response.failed"]  # as OpenAI ends a failed stream
        assert "the model failed" in responses[-2].message and responses[-1].response.status == "failed"
        assert "the model failed" in responses[-1].response.error.message
    finally:
        model.forward = original


def test_refllm_serve_command(tmp_path):
    """``refllm serve`` in its own process: address from the flags, the API key from the environment."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "REFLLM_MODELS": str(tmp_path), "REFLLM_API_KEY": "k", "REFLLM_HOST": "127.0.0.1:1"}
    process = subprocess.Popen([sys.executable, "-m", "refllm", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if http(url, "GET", "/")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        assert http(url, "GET", "/api/tags")[0] == 401
        status, _, payload = http(url, "GET", "/api/tags", headers={"Authorization": "Bearer k"})
        assert status == 200 and "smollm2:135m" in [m["name"] for m in json.loads(payload)["models"]]
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in output and "Traceback" not in output

    bad = subprocess.run([sys.executable, "-m", "refllm", "serve", "--port", "70000"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "port" in bad.stderr and "Traceback" not in bad.stderr


def test_disconnect_stops_a_non_streaming_request_and_a_queued_one(smollm2_gguf):
    from server_fakes import fake_engine

    engine, loaded = fake_engine(smollm2_gguf, EngineSettings(num_parallel=1, max_queue=4), delay_s=0.02)
    with ServerThread(create_app(engine)) as url:
        parts = urllib.parse.urlsplit(url)

        def send(body: dict) -> socket.socket:
            sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
            data = json.dumps(body).encode()
            sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
            return sock

        busy = send({"model": "slow", "prompt": "go", "stream": False, "options": {"num_predict": 300}})
        deadline = time.time() + 10
        while not loaded.get("slow:latest") and time.time() < deadline:
            time.sleep(0.01)
        lm = [m for m in engine.running() if m.name == "slow:latest"][0]
        queued = send({"model": "slow", "prompt": "later", "stream": False, "options": {"num_predict": 300}})
        while lm.queue.waiting < 1 and time.time() < deadline:
            time.sleep(0.01)
        queued.close()  # gives up while waiting in line
        while lm.queue.waiting and time.time() < deadline:
            time.sleep(0.01)
        assert lm.queue.waiting == 0 and lm.queue.running == 1

        model = loaded["slow:latest"][0]
        busy.close()  # gives up while its answer is being generated
        time.sleep(1.0)
        calls = model.forward_calls
        time.sleep(0.3)
        assert model.forward_calls == calls < 150 and lm.queue.idle
    engine.close()
