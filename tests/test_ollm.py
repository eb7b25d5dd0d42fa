"""The oLLM-style surface on the real SmolLM2: native routes, sessions, stored Responses, CLI commands.

Answers are checked against llama.cpp's greedy continuation of golden prompt 8 (SmolLM2's chat
format around "What is the largest planet in the solar system?"), and session turns against a
fresh generation of the same conversation (no cache), so cache reuse must not change a token.
Generations are kept to a few tokens: CI has 2 cores.
"""

from __future__ import annotations

import io
import json
import urllib.parse
from http.client import HTTPConnection

import numpy as np
import openai
import pytest
from conftest import GOLDEN

from refllm.cli.main import main
from refllm.engine import Engine
from refllm.generate import prompt_token_ids
from refllm.server import ServerSettings, ServerThread, create_app

QUESTION = "What is the largest planet in the solar system?"
N = 3  # tokens per answer
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}  # llama.cpp's greedy: argmax of the raw logits


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "logits" / "smollm2.llamacpp.npz")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REFLLM_MODELS", str(directory))  # the store (empty) and the state file live here
        yield directory


@pytest.fixture(scope="module")
def smollm2(models_dir):
    import refllm

    return refllm.load("smollm2")


def start_server(models_dir) -> tuple[Engine, ServerThread, str]:
    engine = Engine()
    server = ServerThread(create_app(engine, ServerSettings(response_store_backend="sqlite", models_dir=str(models_dir))))
    return engine, server, server.start()


@pytest.fixture(scope="module")
def server(models_dir):
    engine, server, url = start_server(models_dir)
    yield url
    server.stop()
    engine.close()


def http(url: str, method: str, path: str, body=None) -> tuple[int, str, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=300)
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type", ""), payload


def call(url: str, method: str, path: str, body=None, status: int = 200):
    got, _, payload = http(url, method, path, body)
    assert got == status, payload
    return json.loads(payload)


def sse(payload: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in payload.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event"), json.loads(lines["data"])))
    return events


def golden_answer(smollm2, golden, n: int = N) -> str:
    return smollm2.detokenize(golden["p8_greedy"][:n])


# -- service, models, plan


def test_health_models_and_plan(server):
    health = call(server, "GET", "/v1/health")
    assert health["status"] == "ok" and health["response_store_backend"] == "sqlite"
    listed = call(server, "GET", "/v1/refllm/models")["data"]
    smol = next(e for e in listed if e["reference"] == "smollm2:135m")
    assert smol["kind"] == "built-in" and smol["availability"] == "materialized"
    assert all(e["availability"] == "materialized" for e in call(server, "GET", "/v1/refllm/models?installed=true")["data"])
    info = call(server, "GET", "/v1/refllm/models/smollm2")
    assert info["plan"]["architecture"] == "llama" and info["runtime"]["applied_kernels"]
    assert call(server, "GET", "/v1/refllm/models/no-such-model", status=404)["error"]["type"] == "not_found_error"
    plan = call(server, "POST", "/v1/plan", {"runtime": {"model_reference": "smollm2", "no_specialization": True}})
    assert plan["backend"] == "numpy" and plan["support_level"] == "generic"
    assert call(server, "POST", "/v1/plan", {"model": "smollm2", "backend": "numba"})["backend"] == "numba"
    assert "unknown backend" in call(server, "POST", "/v1/plan", {"model": "smollm2", "backend": "tpu"}, status=400)["error"]["message"]


def test_docs_describe_every_route(server):
    spec = call(server, "GET", "/openapi.json")
    for path in ("/v1/health", "/v1/refllm/models", "/v1/refllm/models/{reference}", "/v1/plan", "/v1/prompt",
                 "/v1/prompt/stream", "/v1/sessions", "/v1/sessions/{session_id}", "/v1/sessions/{session_id}/prompt",
                 "/v1/sessions/{session_id}/prompt/stream", "/v1/responses/{response_id}", "/api/chat", "/v1/chat/completions"):
        assert path in spec["paths"], path
    for page in ("/docs", "/redoc"):
        status, content_type, body = http(server, "GET", page)
        assert status == 200 and content_type.startswith("text/html")
        assert b"/v1/sessions/{session_id}/prompt/stream" in body and b"/api/generate" in body


# -- prompts


def test_prompt_matches_llama_cpp_and_names_how_it_ran(server, smollm2, golden):
    result = call(server, "POST", "/v1/prompt", {"model": "smollm2", "prompt": QUESTION, "options": {"num_predict": N, **GREEDY}})
    assert result["response"] == golden_answer(smollm2, golden)
    assert result["usage"]["prompt_tokens"] == len(golden["p8_ids"]) and result["usage"]["completion_tokens"] == N
    metadata = result["metadata"]
    assert metadata["backend"] in ("numpy", "numba") and metadata["support_level"] in ("optimized", "generic")
    assert any(kernel.endswith(":Q4_1") for kernel in metadata["applied_kernels"])
    assert "fallback_reason" in metadata

    # oLLM's sections say the same thing
    body = {"runtime": {"model_reference": "smollm2"}, "generation": {"max_new_tokens": N, "stream": False, **GREEDY}, "prompt": QUESTION}
    status, content_type, payload = http(server, "POST", "/v1/prompt/stream", body)
    events = sse(payload)
    assert status == 200 and content_type.startswith("text/event-stream")
    assert [name for name, _ in events[:-1]] == ["delta"] * (len(events) - 1) and events[-1][0] == "done"
    assert "".join(data["text"] for _, data in events[:-1]) == events[-1][1]["response"] == golden_answer(smollm2, golden)


def test_prompt_errors_are_json(server):
    assert "prompt" in call(server, "POST", "/v1/prompt", {"model": "smollm2"}, status=400)["error"]["message"]
    assert call(server, "POST", "/v1/prompt", {"model": "nope", "prompt": "hi"}, status=404)["error"]["message"]
    assert "temperatur" in call(server, "POST", "/v1/prompt", {"model": "smollm2", "prompt": "hi", "options": {"temperatur": 0}},
                                status=400)["error"]["message"]
    metadata = call(server, "GET", "/v1/refllm/models/smollm2")["runtime"]
    other = "numpy" if metadata["backend"] == "numba" else "numba"
    status, _, payload = http(server, "POST", "/v1/prompt", {"model": "smollm2", "prompt": "hi", "runtime": {"backend": other}})
    assert status == 400 and b"backend" in payload  # refused, not silently ignored


# -- sessions and stored responses, across a restart


def test_sessions_and_responses_survive_a_restart(server, models_dir, smollm2, golden):
    session = call(server, "POST", "/v1/sessions", {"model": "smollm2", "generation": {"max_new_tokens": N, **GREEDY}}, status=201)
    first = call(server, "POST", f"/v1/sessions/{session['id']}/prompt", {"prompt": QUESTION})
    assert first["response"] == golden_answer(smollm2, golden) and first["turn"] == 1
    status, _, payload = http(server, "POST", f"/v1/sessions/{session['id']}/prompt/stream", {"prompt": "And the smallest?"})
    second = sse(payload)[-1][1]
    assert status == 200 and second["turn"] == 2
    assert second["usage"]["cached_prompt_tokens"] > first["usage"]["prompt_tokens"]  # turn 1 came from the KV cache
    transcript = call(server, "GET", f"/v1/sessions/{session['id']}")["messages"]
    assert [m["content"] for m in transcript] == [QUESTION, first["response"], "And the smallest?", second["response"]]
    fresh = smollm2.generate(transcript[:3], num_predict=N, **GREEDY)  # no cache: the whole conversation prefilled
    assert second["response"] == fresh.text

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    response = client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=N, temperature=0)
    assert client.responses.retrieve(response.id).output_text == response.output_text

    # "restart": a new engine and app on the same models dir (the sqlite state file)
    engine, restarted, url = start_server(models_dir)
    try:
        assert call(url, "GET", f"/v1/sessions/{session['id']}")["messages"] == transcript
        third = call(url, "POST", f"/v1/sessions/{session['id']}/prompt", {"prompt": "Thanks"})
        assert third["turn"] == 3 and third["usage"]["cached_prompt_tokens"] == 0  # a new process: one full prefill
        assert call(url, "GET", f"/v1/sessions/{session['id']}")["messages"][-1]["content"] == third["response"]

        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert client.responses.retrieve(response.id).output_text == response.output_text
        chained = client.responses.create(model="smollm2", input="And the smallest?", previous_response_id=response.id,
                                          max_output_tokens=N, temperature=0)
        assert chained.previous_response_id == response.id
        conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": response.output_text},
                        {"role": "user", "content": "And the smallest?"}]
        assert chained.usage.input_tokens == len(prompt_token_ids(smollm2, conversation))  # the stored turns came first

        assert client.responses.delete(response.id) is None
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)
        assert call(url, "DELETE", f"/v1/sessions/{session['id']}")["deleted"] is True
        assert call(url, "GET", f"/v1/sessions/{session['id']}", status=404)["error"]["type"] == "not_found_error"
    finally:
        restarted.stop()
        engine.close()


def test_bad_session_and_response_ids_are_404_json(server):
    for method, path, body in (("GET", "/v1/sessions/nope", None), ("DELETE", "/v1/sessions/nope", None),
                               ("POST", "/v1/sessions/nope/prompt", {"prompt": "hi"}),
                               ("POST", "/v1/sessions/nope/prompt/stream", {"prompt": "hi"}),
                               ("GET", "/v1/responses/resp-nope", None), ("DELETE", "/v1/responses/resp-nope", None),
                               ("POST", "/v1/responses", {"model": "smollm2", "input": "hi", "previous_response_id": "resp-nope"})):
        error = call(server, method, path, body, status=404)["error"]
        assert error["type"] == "not_found_error" and "nope" in error["message"], (method, path)
    assert "model" in call(server, "POST", "/v1/sessions", {"model": "no-such-model"}, status=404)["error"]["message"]


# -- CLI


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_cli(monkeypatch, capsys, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", stdin if stdin is not None else Terminal(""))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prompt_command(monkeypatch, capsys, models_dir, smollm2, golden):
    code, out, _ = run_cli(monkeypatch, capsys, "prompt", "--json", "-n", str(N), "--temperature", "0", "-o", "repeat_penalty=1", QUESTION)
    result = json.loads(out)
    assert code == 0 and result["response"] == golden_answer(smollm2, golden)
    assert result["metadata"]["backend"] == "numba" and result["metadata"]["support_level"] == "optimized"
    code, out, _ = run_cli(monkeypatch, capsys, "prompt", "-n", str(N), "--temperature", "0", "-o", "repeat_penalty=1",
                           stdin=io.StringIO(QUESTION))  # a pipe
    assert code == 0 and out == golden_answer(smollm2, golden) + "\n"

    code, out, _ = run_cli(monkeypatch, capsys, "prompt", "--plan-json", "--backend", "numpy", "anything")
    assert code == 0 and json.loads(out)["backend"] == "numpy"  # printed, nothing generated
    code, out, _ = run_cli(monkeypatch, capsys, "prompt", "--plan-json", "--no-specialization", "anything")
    assert json.loads(out)["backend"] == "numpy" and json.loads(out)["support_level"] == "generic"  # the plan the load follows
    code, _, err = run_cli(monkeypatch, capsys, "prompt", "-m", "no-such-model", "hi")
    assert code == 1 and err.startswith("Error:") and "Traceback" not in err


def test_chat_command_refuses_a_pipe_and_plans(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "chat", stdin=io.StringIO("hello\n"))
    assert code == 1 and "refllm prompt" in err
    code, out, _ = run_cli(monkeypatch, capsys, "chat", "--plan-json", "--no-specialization", stdin=io.StringIO(""))
    assert code == 0 and json.loads(out)["support_level"] == "generic"


def test_chat_command_runs_the_run_chat(monkeypatch, capsys, smollm2, golden):
    lines = iter([QUESTION, "/bye"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    code, out, _ = run_cli(monkeypatch, capsys, "chat", "-n", str(N), "--temperature", "0", "-o", "repeat_penalty=1")
    assert code == 0 and golden_answer(smollm2, golden) in out


def test_models_commands(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models", "list")
    assert code == 0 and "smollm2:135m" in out and "built-in" in out and "materialized" in out
    code, out, _ = run_cli(monkeypatch, capsys, "models", "list", "--installed", "--json")
    assert {e["availability"] for e in json.loads(out)} == {"materialized"}
    code, out, _ = run_cli(monkeypatch, capsys, "models", "info", "smollm2", "--json", "--backend", "numpy")
    info = json.loads(out)
    assert info["runtime"]["backend"] == "numpy" and info["plan"]["quant_types"]["Q4_1"]["n_tensors"] > 0
    code, out, _ = run_cli(monkeypatch, capsys, "models", "info", "smollm2", "--plan-json", "--no-specialization")
    assert json.loads(out)["support_level"] == "generic"
    code, out, _ = run_cli(monkeypatch, capsys, "models", "info", "smollm2")
    assert code == 0 and "support level" in out and "kernels" in out
    code, _, err = run_cli(monkeypatch, capsys, "models", "info", "no-such-model")
    assert code == 1 and "not found" in err
    code, out, _ = run_cli(monkeypatch, capsys, "doctor", "--json", "--no-specialization")
    assert json.loads(out)["runtime_plan"]["backend"] == "numpy"


def test_run_applies_a_store_models_parameters_and_system(monkeypatch, capsys, models_dir, smollm2):
    from refllm import store

    store.create("pirate", f"FROM smollm2\nPARAMETER num_predict {N}\nPARAMETER temperature 0\nPARAMETER repeat_penalty 1\n"
                           "SYSTEM You are a pirate.\n")
    expected = smollm2.generate("Who are you?", system="You are a pirate.", num_predict=N, **GREEDY).text
    assert expected != smollm2.generate("Who are you?", num_predict=N, **GREEDY).text  # the system message matters
    code, out, _ = run_cli(monkeypatch, capsys, "run", "pirate", "Who are you?")
    assert code == 0 and out == expected + "\n"
    code, out, _ = run_cli(monkeypatch, capsys, "run", "pirate", "Who are you?", "-n", "1")  # a flag overrides a PARAMETER
    assert out == smollm2.generate("Who are you?", system="You are a pirate.", num_predict=1, **GREEDY).text + "\n"


def test_serve_command_keeps_responses_in_sqlite(tmp_path):
    """``refllm serve --response-store sqlite``: the state file goes under the models dir."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from refllm.engine.response_store import SQLITE_FILE_NAME

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "REFLLM_MODELS": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "refllm", "serve", "--port", str(port), "--response-store", "sqlite"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 60
        while True:
            try:
                health = call(url, "GET", "/v1/health")
                break
            except OSError:
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health["response_store_backend"] == "sqlite" and (tmp_path / SQLITE_FILE_NAME).is_file()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output
