"""One model's request queue: a fixed number of slots, a bounded waiting line, first come first served.

    requests ──► [ waiting line, at most max_queue ] ──► slot 0 │ slot 1 │ ... (num_parallel)

A request that finds a free slot and nobody waiting runs at once. Otherwise it joins
the end of the line; when the line already holds ``max_queue`` requests it is turned
away with ``ServerBusy`` (HTTP 503) instead of waiting silently. Slots are handed out
strictly in arrival order, so a burst of requests cannot starve an earlier one.
Each slot is one independent generation (its own KV cache): requests never share state.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from refllm.errors import RefllmError


class ServerBusy(RefllmError):
    """The request queue is full (or every loaded model is busy): try again later."""

    http_status = 503


class ClientGone(RefllmError):
    """The client went away; nothing is left to answer (nginx's 499 in the logs)."""

    http_status = 499


POLL_S = 0.25  # how often a waiting request looks at its deadline and its client


class RequestQueue:
    def __init__(self, num_parallel: int = 1, max_queue: int = 512):
        if num_parallel < 1:
            raise ValueError("num_parallel must be at least 1")
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self._changed = threading.Condition()
        self._line: deque[object] = deque()  # tickets of waiting requests, oldest first
        self._free_slots = list(range(num_parallel))

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def running(self) -> int:
        return self.num_parallel - len(self._free_slots)

    @property
    def idle(self) -> bool:
        with self._changed:
            return not self._line and len(self._free_slots) == self.num_parallel

    def acquire(self, timeout: float | None = None, cancelled: Callable[[], bool] | None = None) -> int:
        """Wait for a slot in arrival order; return its index.

        Raises ``ServerBusy`` when the line is full (or after ``timeout`` seconds), and
        ``ClientGone`` as soon as ``cancelled()`` says the client has disconnected.
        """
        with self._changed:
            if self._free_slots and not self._line:
                return self._free_slots.pop(0)
            if len(self._line) >= self.max_queue:
                raise ServerBusy(f"server busy: {len(self._line)} requests already waiting (REFLLM_MAX_QUEUE={self.max_queue}), try again later")
            ticket = object()
            self._line.append(ticket)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while not (self._line[0] is ticket and self._free_slots):
                    if cancelled is not None and cancelled():
                        raise ClientGone("the client disconnected while waiting in the queue")
                    if deadline is not None and time.monotonic() >= deadline:
                        raise ServerBusy("server busy: timed out waiting for a free slot")
                    self._changed.wait(POLL_S)
            except BaseException:
                self._line.remove(ticket)
                self._changed.notify_all()
                raise
            self._line.popleft()
            self._changed.notify_all()  # the next in line may now check for a slot
            return self._free_slots.pop(0)

    def release(self, slot: int) -> None:
        with self._changed:
            self._free_slots.append(slot)
            self._free_slots.sort()
            self._changed.notify_all()
