"""Record stores (none | memory | sqlite) and server sessions, on the fake model of server_fakes.

The fake model runs the real generation loop with logits that depend on everything in its
KV cache, so interleaved turns or a wrong cache would change the text.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from server_fakes import fake_engine

from refllm.engine import EngineSettings
from refllm.engine.response_store import SQLITE_FILE_NAME, NotFound, ResponseStore, SqliteRecords, open_records
from refllm.engine.sessions import SessionManager
from refllm.errors import InvalidRequest, ModelNotFound


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_records_put_get_delete(backend, tmp_path):
    records = open_records(backend, tmp_path)
    value = {"text": "héllo", "items": [1, 2, {"x": None}]}
    records.put("response", "a", value)
    value["text"] = "changed after put"  # what is stored is a copy
    assert records.get("response", "a") == {"text": "héllo", "items": [1, 2, {"x": None}]}
    assert records.get("session", "a") is None  # kinds are separate
    assert records.delete("response", "a") is True
    assert records.get("response", "a") is None and records.delete("response", "a") is False


def test_sqlite_is_one_wal_file_under_the_models_dir_and_survives_reopening(tmp_path):
    open_records("sqlite", tmp_path).put("session", "s1", {"messages": ["hi"]})
    path = tmp_path / SQLITE_FILE_NAME
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert SqliteRecords(path).get("session", "s1") == {"messages": ["hi"]}  # a new process would see the same


def test_none_keeps_nothing_and_unknown_backends_are_refused(tmp_path):
    records = open_records("none", tmp_path)
    records.put("response", "a", {"x": 1})
    assert records.get("response", "a") is None
    store = ResponseStore(records)
    with pytest.raises(NotFound, match="response_store_backend") as e:
        store.get("a")
    assert e.value.http_status == 404
    with pytest.raises(InvalidRequest, match="choose one of: none, memory, sqlite"):
        open_records("redis", tmp_path)


def test_a_broken_state_file_is_a_clear_error(tmp_path):
    from refllm.engine.response_store import StateError

    (tmp_path / SQLITE_FILE_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot open the state file"):
        open_records("sqlite", tmp_path)


def test_response_store_keeps_the_conversation_for_chaining():
    store = ResponseStore(open_records("memory"))
    store.save({"id": "resp-1", "object": "response"}, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert store.get("resp-1")["object"] == "response"
    assert [m["content"] for m in store.conversation("resp-1")] == ["a", "b"]
    assert store.delete("resp-1") == {"id": "resp-1", "object": "response.deleted", "deleted": True}
    with pytest.raises(NotFound):
        store.conversation("resp-1")


# -- sessions on the fake engine


@pytest.fixture
def engine(smollm2_gguf):
    engine, loaded = fake_engine(smollm2_gguf, EngineSettings(num_parallel=2), delay_s=0.01)
    yield engine
    engine.close()


def direct_answer(engine, messages: list[dict]) -> str:
    """The same conversation generated from scratch in a fresh cache (the reference for a session turn)."""
    loaded, _ = engine.load("fake")
    return loaded.model.generate(messages, num_predict=64, temperature=0).text


def test_turns_reuse_the_session_cache_and_match_a_fresh_generation(engine):
    sessions = SessionManager(engine, open_records("memory"))
    session = sessions.create("fake", system="be short", options={"temperature": 0})
    first = sessions.prompt(session["id"], "hello").collect()
    second = sessions.prompt(session["id"], "again").collect()
    messages = sessions.get(session["id"])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == first.text and messages[3]["content"] == second.text
    # the second turn evaluated only what is new: the first turn's prompt and answer came from the cache
    assert second.prompt_tokens - second.prompt_eval_count > first.prompt_tokens
    reference = direct_answer(engine, [{"role": "system", "content": "be short"}, *messages[:3]])
    assert second.text == reference


def test_concurrent_prompts_to_one_session_are_serialised(engine):
    sessions = SessionManager(engine, open_records("memory"))
    session = sessions.create("slow", options={"temperature": 0})  # slow: 10 ms per token, 400 tokens unless num_predict stops it
    texts = ["first question", "second question", "third question"]
    errors: list[BaseException] = []

    def ask(text: str) -> None:
        try:
            sessions.prompt(session["id"], text, {"num_predict": 8}).collect()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    messages = sessions.get(session["id"])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert sorted(m["content"] for m in messages[::2]) == sorted(texts)
    # each answer is what a fresh generation of the conversation up to it gives: no turn saw another half-done
    loaded, _ = engine.load("slow")
    for i in (1, 3, 5):
        assert messages[i]["content"] == loaded.model.generate(messages[:i], num_predict=8, temperature=0).text


def test_deleting_a_session_frees_its_cache(engine):
    sessions = SessionManager(engine, open_records("memory"))
    session = sessions.create("fake")
    sessions.prompt(session["id"], "hello").collect()
    (loaded,) = engine.running()
    key = SessionManager.cache_key(session["id"])
    assert loaded.sessions[key].tokens
    sessions.delete(session["id"])
    assert key not in loaded.sessions
    with pytest.raises(NotFound):
        sessions.get(session["id"])
    with pytest.raises(NotFound):
        sessions.delete(session["id"])
    with pytest.raises(NotFound):
        sessions.prompt(session["id"], "hello")


def test_closing_a_turn_early_releases_the_session(engine):
    sessions = SessionManager(engine, open_records("memory"))
    session = sessions.create("slow")
    turn = sessions.prompt(session["id"], "hello")
    next(turn)
    turn.close()  # a client that went away mid-answer
    assert sessions.get(session["id"])["messages"] == []  # an unfinished turn is not recorded
    assert sessions.prompt(session["id"], "hello", {"num_predict": 2}).collect().eval_count == 2


def test_bad_session_requests(engine):
    sessions = SessionManager(engine, open_records("none"))  # "none": sessions still live in memory
    with pytest.raises(ModelNotFound):
        sessions.create("no-such-model")
    with pytest.raises(InvalidRequest, match="temperatur"):
        sessions.create("fake", options={"temperatur": 1})
    session = sessions.create("fake")
    with pytest.raises(InvalidRequest, match="prompt"):
        sessions.prompt(session["id"], "")
    assert sessions.get(session["id"])["model"] == "fake:latest"


def test_only_the_most_recent_session_caches_are_kept(engine, monkeypatch):
    from refllm.engine import sessions as sessions_module

    monkeypatch.setattr(sessions_module, "MAX_CACHED_SESSIONS", 2)
    sessions = SessionManager(engine, open_records("memory"))
    ids = [sessions.create("fake", options={"temperature": 0})["id"] for _ in range(3)]
    for session_id in ids:
        sessions.prompt(session_id, "hello", {"num_predict": 2}).collect()
    (loaded,) = engine.running()
    assert [key for key in loaded.sessions if isinstance(key, str)] == [SessionManager.cache_key(i) for i in ids[1:]]
    again = sessions.prompt(ids[0], "more", {"num_predict": 2}).collect()  # evicted: works, from a full prefill
    assert again.prompt_eval_count == again.prompt_tokens
