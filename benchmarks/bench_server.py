"""What the REST layer costs: request round trips on a near-free fake model, and SmolLM2's decode
speed through the API against calling ``model.generate`` directly.

    python -m pytest benchmarks/bench_server.py --benchmark-enable -q

The fake-model cases time HTTP (waitress), JSON codecs, queueing and the generation loop's
bookkeeping for a 12-token answer; the SmolLM2 cases time 16 greedy tokens after a prompt the
slot's KV cache already holds, so the difference between the two is the server's share.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ollama
import openai
import pytest

from refllm.engine import Engine, EngineSettings
from refllm.packaged_models import smollm2_path
from refllm.server import ServerThread, create_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_fakes import fake_engine  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def fake_url():
    engine, _ = fake_engine(smollm2_path(), EngineSettings(num_parallel=1))
    with ServerThread(create_app(engine)) as url:
        yield url
    engine.close()


def test_ollama_generate_round_trip(benchmark, fake_url):
    client = ollama.Client(host=fake_url)
    answer = benchmark(client.generate, model="fake", prompt="hello", options={"temperature": 0}, stream=False)
    assert answer.done


def test_ollama_generate_streamed_round_trip(benchmark, fake_url):
    client = ollama.Client(host=fake_url)
    chunks = benchmark(lambda: list(client.generate(model="fake", prompt="hello", options={"temperature": 0}, stream=True)))
    assert chunks[-1].done


def test_openai_chat_streamed_round_trip(benchmark, fake_url):
    client = openai.OpenAI(base_url=fake_url + "/v1", api_key="unused", max_retries=0)
    chunks = benchmark(lambda: list(client.chat.completions.create(model="fake", messages=MESSAGES, temperature=0, stream=True)))
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.fixture(scope="module")
def smollm2_server():
    engine = Engine(EngineSettings(num_parallel=1))
    with ServerThread(create_app(engine)) as url:
        client = ollama.Client(host=url)
        client.chat(model="smollm2", messages=MESSAGES, options={"num_predict": 1})  # load, build, cache the prompt
        model = engine.running()[0].model
        yield client, model
    engine.close()


OPTIONS = {"temperature": 0, "num_predict": 16}


def test_smollm2_16_tokens_through_the_api(benchmark, smollm2_server):
    client, _ = smollm2_server
    answer = benchmark.pedantic(client.chat, kwargs={"model": "smollm2", "messages": MESSAGES, "options": OPTIONS}, rounds=3)
    assert answer.eval_count == 16


def test_smollm2_16_tokens_direct(benchmark, smollm2_server):
    from refllm.generate import Session

    _, model = smollm2_server
    session = Session()
    model.generate(MESSAGES, session=session, num_predict=1)  # the same cached prompt as the API case
    result = benchmark.pedantic(model.generate, args=(MESSAGES,), kwargs={"session": session, **OPTIONS}, rounds=3)
    assert result.eval_count == 16
