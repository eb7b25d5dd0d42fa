"""Server sessions: a conversation kept on the server, its KV cache reused from turn to turn.

    sessions = SessionManager(engine, open_records("sqlite", models_dir))
    session = sessions.create("smollm2", system="Be brief.")      # {"id": "sess-...", "messages": [], ...}
    turn = sessions.prompt(session["id"], "Name a planet")        # Piece, Piece, ..., Finished
    finished = turn.collect()                                     # the answer; the transcript now has 2 more messages
    sessions.get(session["id"])["messages"]                       # [{"role": "user", ...}, {"role": "assistant", ...}]
    sessions.delete(session["id"])                                # transcript and KV cache gone

How a turn runs: the transcript plus the new user message go to the engine as one chat
request (``GenerationRequest.cache_key`` names the session), so the engine renders the chat
template and ``refllm.generate`` reuses the longest common prefix of the session's KV cache:
only the new message (and the template's markers around it) is evaluated.

The cache lives in the loaded model (``LoadedModel.sessions``) and goes away when the model
is unloaded, when the session is deleted, or when more than ``MAX_CACHED_SESSIONS`` other
sessions were used since (memory stays bounded); the transcript lives in the record store (``memory`` or ``sqlite``), so after a
restart a session continues with one full prefill, then reuses its cache again.

Concurrent prompts to one session are serialised (a lock per session): the second waits for
the first to finish, then sees its answer in the transcript.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
import uuid
import weakref
from typing import Callable, Iterator

from refllm.engine.engine import Engine, Finished, GenerationRequest, GenerationStream, collect_finished
from refllm.engine.response_store import MemoryRecords, NotFound, Records
from refllm.errors import InvalidRequest, RefllmError

KIND = "session"
MAX_CACHED_SESSIONS = 16  # KV caches kept in memory; a session beyond them prefills its transcript again


def new_session_id() -> str:
    return f"sess-{uuid.uuid4().hex[:24]}"


class SessionManager:
    def __init__(self, engine: Engine, records: Records | None = None):
        self.engine = engine
        # Sessions always live at least in memory (as oLLM's do); "sqlite" makes them durable.
        self.records = records if records is not None and records.backend != "none" else MemoryRecords()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()  # sessions with a KV cache, least recently used first

    @staticmethod
    def cache_key(session_id: str) -> str:
        """The key of the session's KV cache in ``LoadedModel.sessions`` (slots use ints)."""
        return f"session:{session_id}"

    def _lock(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(session_id, threading.Lock())

    # -- records

    def create(self, model: str, system: str | None = None, options: dict | None = None) -> dict:
        recipe = self.engine.resolve(model)  # 404 now for a model that does not exist
        if system is not None and not isinstance(system, str):
            raise InvalidRequest("field 'system' must be a string")
        from refllm.sample import Options

        Options.from_dict(dict(options or {}))  # unknown or mistyped options: 400 now, not at the first prompt
        session = {"id": new_session_id(), "object": "session", "model": recipe.name, "created_at": int(time.time()),
                   "system": system, "options": dict(options or {}), "messages": []}
        self.records.put(KIND, session["id"], session)
        return session

    def get(self, session_id: str) -> dict:
        session = self.records.get(KIND, session_id)
        if session is None:
            raise NotFound(f"session '{session_id}' not found")
        return session

    def delete(self, session_id: str) -> bool:
        """Forget the transcript and free the KV cache (after a prompt in progress has finished)."""
        with self._lock(session_id):
            found = self.records.delete(KIND, session_id)
            self._free_cache(session_id)
        with self._locks_guard:
            self._locks.pop(session_id, None)
            self._recent.pop(session_id, None)
        if not found:
            raise NotFound(f"session '{session_id}' not found")
        return True

    # -- a turn

    def prompt(self, session_id: str, text: str, options: dict | None = None,
               cancelled: Callable[[], bool] | None = None) -> "SessionTurn":
        """Start one turn; the returned stream holds the session's lock until it is finished or closed."""
        if not isinstance(text, str) or not text:
            raise InvalidRequest("field 'prompt' must be a non-empty string")
        lock = self._lock(session_id)
        lock.acquire()  # serialised: a second prompt to this session waits here
        try:
            session = self.get(session_id)
            user = {"role": "user", "content": text}
            request = GenerationRequest(model=session["model"], prompt=[*session["messages"], user],
                                        system=session["system"], options={**session["options"], **(options or {})},
                                        cache_key=self.cache_key(session_id))
            events = self.engine.generate(request, cancelled)
        except BaseException:
            lock.release()
            raise
        return SessionTurn(self, session, user, events, lock)

    def _finish_turn(self, session: dict, user: dict, finished: Finished) -> None:
        session["messages"] += [user, {"role": "assistant", "content": finished.text}]
        self.records.put(KIND, session["id"], session)
        with self._locks_guard:  # keep the caches of the most recently used sessions only
            self._recent[session["id"]] = None
            self._recent.move_to_end(session["id"])
            evicted = [self._recent.popitem(last=False)[0] for _ in range(len(self._recent) - MAX_CACHED_SESSIONS)]
        for session_id in evicted:
            self._free_cache(session_id)  # a turn still running on it keeps its own reference; the next one re-prefills

    def _free_cache(self, session_id: str) -> None:
        for loaded in self.engine.running():
            loaded.sessions.pop(self.cache_key(session_id), None)


class SessionTurn:
    """The events of one session turn (``Piece``..., ``Finished``); the answer joins the transcript
    when ``Finished`` arrives. ``close()`` (or the end of the events) releases the session."""

    def __init__(self, manager: SessionManager, session: dict, user: dict, events: GenerationStream, lock: threading.Lock):
        self.manager, self.session, self.user = manager, session, user
        self._events, self._lock = events, lock
        self._released = False

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        if self._released:
            raise StopIteration
        try:
            event = next(self._events)
        except BaseException:
            self.close()
            raise
        if isinstance(event, Finished):
            self.manager._finish_turn(self.session, self.user, event)
        return event

    def close(self) -> None:
        if not self._released:
            self._released = True
            try:
                self._events.close()
            finally:
                self._lock.release()

    def collect(self) -> Finished:
        return collect_finished(self)


# --------------------------------------------------------------------------- execution metadata

_plans: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {backend: RuntimePlan}


def plan_for(model) -> object:
    """The runtime plan of a loaded model as it will run (its current backend); cached per model."""
    from refllm.plan import build_plan

    by_backend = _plans.setdefault(model, {})
    if model.backend not in by_backend:
        by_backend[model.backend] = build_plan(model, backend=model.backend)
    return by_backend[model.backend]


def execution_metadata(plan) -> dict:
    """What a prompt response says about how it ran (oLLM's response metadata).

    ``applied_kernels`` lists the matmul kernel per weight type ("numba:Q4_1") and the
    backend of each other op ("numpy:rms_norm"); ``fallback_reason`` joins the plan's fallbacks.
    """
    kernels = [f"{q.backend}:{name}" for name, q in plan.quant_types.items()]
    kernels += [f"{op.backend}:{name}" for name, op in plan.ops.items() if name != "linear"]
    return {
        "backend": plan.backend,
        "support_level": plan.support_level,
        "specialization": plan.specialization,
        "specialization_enabled": not plan.no_specialization,
        "device_type": "cpu",
        "applied_kernels": kernels,
        "fallback_reason": "; ".join(plan.fallbacks) or None,
    }


def metadata_for(model) -> dict:
    """``execution_metadata`` of a loaded model; a model the planner cannot read reports only its backend."""
    try:
        return execution_metadata(plan_for(model))
    except (RefllmError, AttributeError, TypeError) as e:
        return {"backend": getattr(model, "backend", None), "support_level": "unknown", "specialization": None,
                "specialization_enabled": False, "device_type": "cpu", "applied_kernels": [],
                "fallback_reason": f"no runtime plan: {e}"}
