"""Thinking: a model's reasoning, between its family's markers, kept apart from the answer.

    "<think>The user wants a greeting.</think>Hello!"   ->   thinking "The user wants a greeting."
                                                            content  "Hello!"

``think`` as the APIs accept it: ``true``/``false`` or an effort ``"low"|"medium"|"high"``
(Ollama's ``think``, OpenAI's ``reasoning_effort`` / ``reasoning.effort``).

* A model thinks when its chat template knows the markers (Qwen3, DeepSeek-R1, ...).
  Forcing ``think`` on for any other model is an error, not a silent no-op.
* ``think: false`` tells the template (``enable_thinking=False``, Qwen3's switch) and drops
  whatever reasoning still comes out.
* Some templates open the thinking block themselves (the prompt ends in ``<think>``): then
  the output starts inside it.

``ThinkingSplitter`` works on a stream: text arrives in pieces, a marker may be cut in two,
so a piece that could be the start of a marker is held back until the next one decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from refllm.errors import InvalidRequest

THINK_EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class ThinkingMarkers:
    open: str = "<think>"
    close: str = "</think>"


FAMILY_MARKERS = (ThinkingMarkers("<think>", "</think>"),)  # Qwen3, DeepSeek-R1, SmolLM3, Phi-4-reasoning, ...


def check_think(value) -> bool | str | None:
    """A request's ``think`` field: None (model default), True/False, or an effort level."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_EFFORTS:
        return value
    raise InvalidRequest('field \'think\' must be true, false, "low", "medium" or "high"')


def thinking_markers(template_source: str | None) -> ThinkingMarkers | None:
    """The markers a chat template uses for reasoning, or None for a model that does not think."""
    if not template_source:
        return None
    for markers in FAMILY_MARKERS:
        if markers.open in template_source and markers.close in template_source:
            return markers
    return None


def template_variables(think: bool | str | None) -> dict:
    """What the chat template is told: Qwen3's ``enable_thinking``, gpt-oss-style ``reasoning_effort``."""
    if think is None:
        return {}
    variables = {"enable_thinking": think is not False}
    if isinstance(think, str):
        variables["reasoning_effort"] = think
    return variables


def _held_back(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ThinkingSplitter:
    """Streamed text -> (thinking, content) pieces; ``push`` per piece, then ``flush`` once."""

    def __init__(self, markers: ThinkingMarkers, inside: bool = False):
        self.markers = markers
        self.inside = inside  # True while between the open and close markers
        self.answer_started = False  # once the answer began, "<think>" is just text
        self.after_close = False  # drop the blank line(s) between "</think>" and the answer
        self.pending = ""  # text that may be the start of a marker

    def push(self, text: str) -> tuple[str, str]:
        self.pending += text
        thinking, content = [], []
        while self.pending:
            if not self.inside and self.answer_started:
                content.append(self.pending)
                self.pending = ""
                break
            if not self.inside and self.after_close:
                self.pending = self.pending.lstrip("\n")
                if not self.pending:
                    break
                self.after_close = False
            marker = self.markers.close if self.inside else self.markers.open
            at = self.pending.find(marker)
            if at >= 0:  # a whole marker: switch sides
                before, self.pending = self.pending[:at], self.pending[at + len(marker):]
                if self.inside:
                    thinking.append(before)
                    self.after_close = True
                elif before.strip():  # text before "<think>" is the answer: the marker is text too
                    content.append(before + marker)
                    self.answer_started = True
                    continue
                self.inside = not self.inside
                continue
            keep = _held_back(self.pending, marker)  # a marker may be cut between two pieces
            release, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
            if self.inside:
                thinking.append(release)
            elif release.strip():
                content.append(release)
                self.answer_started = True
            else:  # only whitespace so far: it may still precede "<think>"
                self.pending = release + self.pending
            break
        return "".join(thinking), "".join(content)

    def flush(self) -> tuple[str, str]:
        rest, self.pending = self.pending, ""
        return (rest, "") if self.inside else ("", rest)
