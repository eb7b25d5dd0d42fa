"""``StopMatcher``: stop sequences that may span several tokens, never emitted.

Text arrives in pieces (one per token). A stop sequence can start in one piece and end in a
later one, so the matcher holds back any tail of the text that could still grow into a stop
sequence, and releases it once it cannot:

    m = StopMatcher(["\\nUser:"])
    m.push("Hi!\\nUs")   -> "Hi!"        ("\\nUs" might be the start of "\\nUser:")
    m.push("ual")       -> "\\nUsual"    (it was not)
    m.push("\\nUser: x") -> ""           m.stopped is True; the stop text and what follows are dropped
"""

from __future__ import annotations

from typing import Iterable


class StopMatcher:
    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""  # text received but not yet released
        self.stopped = False

    def push(self, text: str) -> str:
        """Add ``text``; return the part that is now safe to emit ("" once stopped)."""
        if self.stopped:
            return ""
        self.pending += text
        found = [i for i in (self.pending.find(stop) for stop in self.stops) if i >= 0]
        if found:
            self.stopped = True
            released, self.pending = self.pending[: min(found)], ""
            return released
        keep = self._longest_stop_prefix_at_end()
        released = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return released

    def flush(self) -> str:
        """The end of generation: whatever is held back is plain text after all."""
        released, self.pending = ("" if self.stopped else self.pending), ""
        return released

    def _longest_stop_prefix_at_end(self) -> int:
        """Length of the longest end of ``pending`` that is the beginning of some stop sequence."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest
