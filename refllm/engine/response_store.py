"""Records that outlive a request: stored OpenAI Responses and server sessions.

One tiny key-value interface, three backends (the ``server.response_store_backend`` setting):

    none     nothing is kept: ``get`` finds nothing, ``put`` forgets (the default, as in oLLM)
    memory   a dict, lost when the server stops
    sqlite   one SQLite file under the models dir (stdlib ``sqlite3``, WAL journal), so
             stored responses and sessions survive a restart

    records = open_records("sqlite", models_dir)
    records.put("response", "resp-123", {...})       # any JSON-able dict
    records.get("response", "resp-123")              # -> the dict, or None
    records.delete("response", "resp-123")           # -> True if it was there

``ResponseStore`` (below) is the ``/v1/responses`` layer on top: it keeps each response
with the conversation that led to it, so ``previous_response_id`` can continue it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from refllm.errors import InvalidRequest, ModelNotFound, RefllmError

BACKENDS = ("none", "memory", "sqlite")
SQLITE_FILE_NAME = "refllm-state.sqlite3"  # under runtime.models_dir


class StateError(RefllmError):
    """The state file cannot be opened or written (disk full, permissions, corrupt file)."""

    http_status = 500


class NotFound(ModelNotFound):
    """A response or session id that is not stored (HTTP 404)."""


class Records(Protocol):
    backend: str

    def get(self, kind: str, key: str) -> dict | None: ...
    def put(self, kind: str, key: str, value: dict) -> None: ...
    def delete(self, kind: str, key: str) -> bool: ...


class NoRecords:
    """Keeps nothing."""

    backend = "none"

    def get(self, kind: str, key: str) -> dict | None:
        return None

    def put(self, kind: str, key: str, value: dict) -> None:
        pass

    def delete(self, kind: str, key: str) -> bool:
        return False


class MemoryRecords:
    """A dict per kind, guarded by a lock; values are copied in and out (through JSON) like the
    SQLite backend, so a caller changing a dict later never changes what is stored."""

    backend = "memory"

    def __init__(self):
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], str] = {}

    def get(self, kind: str, key: str) -> dict | None:
        with self._lock:
            text = self._data.get((kind, key))
        return None if text is None else json.loads(text)

    def put(self, kind: str, key: str, value: dict) -> None:
        text = json.dumps(value)
        with self._lock:
            self._data[(kind, key)] = text

    def delete(self, kind: str, key: str) -> bool:
        with self._lock:
            return self._data.pop((kind, key), None) is not None


class SqliteRecords:
    """One table ``records(kind, key, updated_at, value JSON)`` in one file, WAL journal.

    A connection per call keeps it thread-safe (waitress serves requests on many threads);
    WAL lets readers go on while a writer commits, and a committed write survives a crash.
    """

    backend = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, "
                           "updated_at REAL NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key))")
        except (OSError, sqlite3.Error) as e:
            raise StateError(f"cannot open the state file {self.path}: {e}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at each checkpoint, never corrupt
        return db

    def _run(self, sql: str, args: tuple) -> tuple[list, int]:
        """Run one statement in its own transaction; return (rows, rows changed)."""
        try:
            db = self._connect()
            try:
                with db:  # one transaction: committed, or rolled back on error
                    cursor = db.execute(sql, args)
                    rows = cursor.fetchall()
                    count = cursor.rowcount
            finally:
                db.close()
        except sqlite3.Error as e:
            raise StateError(f"state file {self.path}: {e}") from None
        return rows, count

    def get(self, kind: str, key: str) -> dict | None:
        rows, _ = self._run("SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key))
        return json.loads(rows[0][0]) if rows else None

    def put(self, kind: str, key: str, value: dict) -> None:
        self._run("INSERT OR REPLACE INTO records (kind, key, updated_at, value) VALUES (?, ?, ?, ?)",
                  (kind, key, time.time(), json.dumps(value)))

    def delete(self, kind: str, key: str) -> bool:
        _, count = self._run("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
        return count > 0


def open_records(backend: str, models_dir: str | Path | None = None) -> Records:
    """The backend named by ``server.response_store_backend``; sqlite keeps its file under ``models_dir``."""
    if backend == "none":
        return NoRecords()
    if backend == "memory":
        return MemoryRecords()
    if backend == "sqlite":
        if models_dir is None:
            from refllm.config import load_settings

            models_dir = load_settings().runtime.models_dir
        return SqliteRecords(Path(models_dir) / SQLITE_FILE_NAME)
    raise InvalidRequest(f"unknown response store backend '{backend}' (choose one of: {', '.join(BACKENDS)})")


# --------------------------------------------------------------------------- /v1/responses


class ResponseStore:
    """Stored Responses: the response object plus the conversation it ended (for chaining).

    ``conversation`` holds the messages without the request's ``instructions`` (OpenAI does
    not carry instructions over to a chained response), ending with the assistant's answer.
    """

    KIND = "response"

    def __init__(self, records: Records):
        self.records = records

    @property
    def enabled(self) -> bool:
        return self.records.backend != "none"

    def save(self, response: dict, conversation: list[dict]) -> None:
        self.records.put(self.KIND, response["id"], {"response": response, "conversation": conversation})

    def get(self, response_id: str) -> dict:
        return self._record(response_id)["response"]

    def conversation(self, response_id: str) -> list[dict]:
        """The messages ``previous_response_id`` continues (a 404 naming the id if it is not stored)."""
        return self._record(response_id)["conversation"]

    def delete(self, response_id: str) -> dict:
        """OpenAI's deletion object; a 404 when the id is not stored."""
        self._check_enabled()
        if not self.records.delete(self.KIND, response_id):
            raise NotFound(f"response '{response_id}' not found")
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    def _record(self, response_id: str) -> dict:
        self._check_enabled()
        record = self.records.get(self.KIND, response_id)
        if record is None:
            raise NotFound(f"response '{response_id}' not found")
        return record

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise NotFound("responses are not stored on this server: set server.response_store_backend "
                           "(REFLLM_SERVER__RESPONSE_STORE_BACKEND) to 'memory' or 'sqlite'")
