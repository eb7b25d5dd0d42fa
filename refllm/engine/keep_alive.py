"""``keep_alive``: how long a model stays loaded after its last request.

Ollama accepts three spellings, and so do we:

    300, 300.0          a number of seconds
    "5m", "1h30m", "2s" a Go-style duration string (units h, m, s, ms, us, ns)
    "300"               a number in a string (seconds; the env variable form)

0 means "unload as soon as the request is done", any negative value means "forever".
The parsed value is seconds as a float, ``math.inf`` for forever.
"""

from __future__ import annotations

import math
import re

from refllm.errors import InvalidRequest

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: 5 minutes

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# one "<number><unit>" part of a duration, e.g. "1.5h" or "30m"
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string such as ``"1h30m"`` or ``"-1m"``."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "":
        raise InvalidRequest(f"invalid duration: {text!r}")
    total, position = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(body):
        raise InvalidRequest(f"invalid duration: {text!r} (use e.g. \"5m\", \"1h30m\", or seconds)")
    return sign * total


def parse_keep_alive(value: object, default: float = DEFAULT_KEEP_ALIVE_S) -> float:
    """``keep_alive`` as seconds: ``None`` -> default, negative -> ``math.inf``."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive must be a duration string or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = parse_duration(value)
    else:
        raise InvalidRequest("keep_alive must be a duration string or a number of seconds")
    if math.isnan(seconds):
        raise InvalidRequest("keep_alive must be a number, not NaN")
    return math.inf if seconds < 0 else seconds
