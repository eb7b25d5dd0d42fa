"""The engine on its own: keep_alive parsing, the bounded FIFO queue, loading/unloading, slots."""

from __future__ import annotations

import math
import threading
import time

import pytest

from refllm.engine import EngineSettings, GenerationRequest, RequestQueue, ServerBusy, parse_keep_alive, validate_model_name
from refllm.errors import InvalidRequest, ModelNotFound
from server_fakes import fake_engine


# -- keep_alive: Ollama's spellings (Go's time.ParseDuration units, numbers as seconds)


@pytest.mark.parametrize("value, seconds", [
    (None, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("300ms", 0.3), ("2h45m30s", 9930.0),
    (0, 0.0), ("0", 0.0), ("0s", 0.0), (60, 60.0), (1.5, 1.5), ("3600", 3600.0),
    (-1, math.inf), ("-1", math.inf), ("-1m", math.inf),
])
def test_keep_alive_values(value, seconds):
    assert parse_keep_alive(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5 minutes", "m", "5x", "1h-3m", True, [], {}, "nan"])
def test_keep_alive_rejects_garbage(value):
    with pytest.raises(InvalidRequest):
        parse_keep_alive(value)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b/c", "/abs", "x.gguf", "", None, 7, "bad name", "a:b:c"])
def test_model_names_that_are_refused(name):
    with pytest.raises(InvalidRequest):
        validate_model_name(name)


# -- the queue


def test_queue_hands_out_slots_in_arrival_order():
    q = RequestQueue(num_parallel=1, max_queue=10)
    first = q.acquire()
    order, threads = [], []
    for i in range(5):
        t = threading.Thread(target=_take, args=(q, i, order))
        threads.append(t)
        t.start()
        while q.waiting < i + 1:  # each thread is in line before the next one starts
            time.sleep(0.001)
    q.release(first)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def _take(q: RequestQueue, i: int, order: list) -> None:
    slot = q.acquire()
    order.append(i)
    q.release(slot)


def test_queue_bound_turns_requests_away():
    q = RequestQueue(num_parallel=2, max_queue=1)
    a, b = q.acquire(), q.acquire()
    assert {a, b} == {0, 1} and q.running == 2
    waiter = threading.Thread(target=lambda: q.release(q.acquire()))
    waiter.start()
    while q.waiting < 1:
        time.sleep(0.001)
    with pytest.raises(ServerBusy) as err:
        q.acquire()
    assert err.value.http_status == 503
    q.release(a)
    waiter.join(5)
    q.release(b)
    assert q.idle


def test_queue_timeout_leaves_the_line_clean():
    q = RequestQueue(num_parallel=1, max_queue=5)
    slot = q.acquire()
    with pytest.raises(ServerBusy):
        q.acquire(timeout=0.05)
    assert q.waiting == 0
    q.release(slot)
    assert q.acquire(timeout=0.05) == 0


# -- the engine with fake models


@pytest.fixture
def engine(smollm2_gguf):
    engine, loaded = fake_engine(smollm2_gguf, EngineSettings(num_parallel=2, max_queue=8, max_loaded_models=2))
    yield engine, loaded
    engine.close()


def run(engine, name="fake", prompt="hello", **options) -> str:
    return engine.generate(GenerationRequest(name, prompt, options={"temperature": 0, **options})).collect().text


def test_unknown_model_is_404(engine):
    with pytest.raises(ModelNotFound):
        run(engine[0], "nothere")


def test_loads_once_and_keeps_the_model(engine):
    eng, loaded = engine
    assert run(eng) == run(eng)
    assert len(loaded["fake:latest"]) == 1
    assert [m.name for m in eng.running()] == ["fake:latest"]


def test_keep_alive_zero_unloads_after_the_request(engine):
    eng, _ = engine
    eng.generate(GenerationRequest("fake", "hi", options={"num_predict": 2}, keep_alive=0)).collect()
    assert eng.running() == []


def test_expired_models_are_unloaded(engine):
    eng, _ = engine
    eng.generate(GenerationRequest("fake", "hi", options={"num_predict": 2}, keep_alive="50ms")).collect()
    deadline = time.time() + 5
    while eng.running() and time.time() < deadline:
        time.sleep(0.05)
    assert eng.running() == []


def test_max_loaded_models_unloads_the_idle_one_that_expires_first(engine):
    eng, _ = engine
    eng.load("fake", keep_alive="1h")
    eng.load("other", keep_alive="10m")
    eng.load("slow", keep_alive="1h")  # over the limit of 2: "other" expires first
    assert sorted(m.name for m in eng.running()) == ["fake:latest", "slow:latest"]


def test_all_models_busy_is_503(engine):
    eng, _ = engine
    streams = [eng.generate(GenerationRequest(n, "hi", options={"num_predict": 50})) for n in ("slow", "fake")]
    try:
        with pytest.raises(ServerBusy):
            eng.load("other")
    finally:
        for s in streams:
            s.close()


def test_closing_a_stream_stops_generation_and_frees_the_slot(engine):
    eng, loaded = engine
    stream = eng.generate(GenerationRequest("slow", "hi", options={"num_predict": 300}))
    next(stream)
    model = loaded["slow:latest"][0]
    stream.close()
    calls = model.forward_calls
    time.sleep(0.3)
    assert model.forward_calls == calls < 10
    lm = [m for m in eng.running() if m.name == "slow:latest"][0]
    assert lm.queue.idle and lm.users == 0


def test_parallel_slots_do_not_share_kv_state(engine):
    """Two generations interleaved on two slots give what each gives alone."""
    eng, _ = engine
    alone = {p: run(eng, prompt=p) for p in ("alpha", "beta")}
    a = eng.generate(GenerationRequest("fake", "alpha", options={"temperature": 0}))
    b = eng.generate(GenerationRequest("fake", "beta", options={"temperature": 0}))
    texts = {"alpha": [], "beta": []}
    pending = {"alpha": a, "beta": b}
    while pending:  # step them in lockstep
        for prompt, stream in list(pending.items()):
            event = next(stream, None)
            if event is None:
                del pending[prompt]
            elif hasattr(event, "done_reason"):
                pass
            else:
                texts[prompt].append(event.text)
    assert {p: "".join(t) for p, t in texts.items()} == alone
    assert alone["alpha"] != alone["beta"]


def test_bad_options_raise_before_any_output(engine):
    with pytest.raises(InvalidRequest, match="unknown option"):
        engine[0].generate(GenerationRequest("fake", "hi", options={"nope": 1}))
    lm = engine[0].running()[0]
    assert lm.queue.idle and lm.users == 0


def test_embeddings_are_unit_length_and_truncate(engine):
    eng, _ = engine
    result = eng.embed("fake", ["hello", "hello world"], dimensions=4)
    assert len(result.embeddings) == 2 and all(len(v) == 4 for v in result.embeddings)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-5 for v in result.embeddings)
    with pytest.raises(InvalidRequest, match="context length"):
        eng.embed("fake", ["x" * 300], truncate=False)
    assert len(eng.embed("fake", ["x" * 300]).embeddings[0]) == 8


def test_a_models_stored_system_and_parameters_apply(smollm2_gguf):
    from pathlib import Path

    from refllm.engine import Engine, ModelRecipe
    from server_fakes import FakeModel

    recipe = ModelRecipe("styled:latest", Path(smollm2_gguf), params={"num_predict": 3, "temperature": 0}, system="S")
    model = FakeModel()
    engine = Engine(resolver=lambda name: recipe, loader=lambda r: model)
    try:
        finished = engine.generate(GenerationRequest("styled", [{"role": "user", "content": "hi"}])).collect()
        assert finished.eval_count == 3 and finished.done_reason == "length"
        assert finished.prompt_tokens == len("[system]S\n[user]hi\n[assistant]") + 1  # the stored SYSTEM came first
        own = engine.generate(GenerationRequest("styled", "hi", system="mine", options={"num_predict": 1})).collect()
        assert own.eval_count == 1 and own.prompt_tokens == len("[system]mine\n[user]hi\n[assistant]") + 1
    finally:
        engine.close()


def test_a_changed_model_definition_is_reloaded(smollm2_gguf):
    from pathlib import Path

    from refllm.engine import Engine, ModelRecipe
    from server_fakes import FakeModel

    recipes = {"v": ModelRecipe("m:latest", Path(smollm2_gguf), params={"num_predict": 2})}
    loads = []
    engine = Engine(resolver=lambda name: recipes["v"], loader=lambda r: loads.append(r) or FakeModel())
    try:
        assert engine.generate(GenerationRequest("m", "hi")).collect().eval_count == 2
        recipes["v"] = ModelRecipe("m:latest", Path(smollm2_gguf), params={"num_predict": 1})  # e.g. /api/create again
        assert engine.generate(GenerationRequest("m", "hi")).collect().eval_count == 1
        assert len(loads) == 2
    finally:
        engine.close()
