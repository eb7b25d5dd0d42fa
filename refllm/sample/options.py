"""Generation options with Ollama's names and defaults, validated once at the door.

    opts = Options.from_dict({"temperature": 0.2, "num_predict": 32, "stop": ["\\n\\n"]})

An unknown name or a value of the wrong type raises ``InvalidRequest`` naming the option
(the server turns that into HTTP 400). ``None`` means "use the default", as a JSON null does.

Ollama's load-time options (``num_gpu``, ``use_mmap``, ...) and the options llama.cpp has
retired (``tfs_z``, ``penalize_newline``) are accepted so that existing clients keep working,
but this runtime does not act on them (see ``ACCEPTED_BUT_UNUSED``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from refllm.errors import InvalidRequest

# Ollama's default context window (its OLLAMA_CONTEXT_LENGTH default); capped at the
# model's own training context when a generation starts.
DEFAULT_NUM_CTX = 4096


@dataclass(frozen=True)
class Options:
    # -- how long
    num_predict: int = -1  # tokens to generate; -1 = until end-of-generation or the context is full
    num_ctx: int = DEFAULT_NUM_CTX  # context window (prompt + generated tokens)
    num_keep: int = 4  # tokens Ollama keeps when it shifts the context (we never shift; kept for clients)
    stop: tuple[str, ...] = ()  # stop sequences: generation ends before the first one, which is not emitted
    num_batch: int = 512  # prompt tokens evaluated per forward call (bounds prefill memory, like llama.cpp's n_batch)

    # -- the sampling chain, in the order it runs (see refllm.sample.sampler)
    repeat_penalty: float = 1.1  # >1 discourages tokens seen in the last repeat_last_n tokens
    repeat_last_n: int = 64  # how far back the penalties look; 0 = off, -1 = num_ctx
    presence_penalty: float = 0.0  # subtracted once from every token seen
    frequency_penalty: float = 0.0  # subtracted once per occurrence
    top_k: int = 40  # keep the k most likely tokens; 0 = off
    typical_p: float = 1.0  # locally typical sampling; 1.0 = off
    top_p: float = 0.9  # nucleus: smallest set with probability >= top_p; 1.0 = off
    min_p: float = 0.0  # drop tokens with p < min_p * p_max; 0.0 = off
    temperature: float = 0.8  # 0 = greedy (the most likely token after penalties)
    mirostat: int = 0  # 0 = off, 1 = Mirostat, 2 = Mirostat 2.0 (replace top_k/typical/top_p/min_p)
    mirostat_tau: float = 5.0  # target surprise (bits)
    mirostat_eta: float = 0.1  # learning rate of the surprise feedback
    seed: int | None = None  # None or -1: a fresh random seed per request

    # -- accepted for compatibility, not acted upon
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "Options":
        """Validate a request's ``options`` object (Ollama names) into ``Options``."""
        return cls().updated(values or {})

    def updated(self, values: dict[str, Any]) -> "Options":
        """A copy with some options changed, each one validated."""
        if not isinstance(values, dict):
            raise InvalidRequest(f"options must be an object of name: value, not {type(values).__name__}")
        changes: dict[str, Any] = {}
        extra = dict(self.extra)
        for name, value in values.items():
            if name in ACCEPTED_BUT_UNUSED:
                if value is not None and not isinstance(value, ACCEPTED_BUT_UNUSED[name]):
                    raise InvalidRequest(f"option '{name}' must be {_type_word(ACCEPTED_BUT_UNUSED[name])}, got {value!r}")
                extra[name] = value
            elif name in _FIELD_TYPES:
                changes[name] = _default_of(name) if value is None else _validated(name, value)
            else:
                raise InvalidRequest(f"unknown option '{name}'")
        return replace(self, **changes, extra=extra)

    def with_text_value(self, name: str, text: str) -> "Options":
        """Set one option from text, as ``/set parameter NAME VALUE`` in the CLI does."""
        return self.updated({name: parse_option_text(name, text)})

    def as_dict(self) -> dict[str, Any]:
        """Plain ``name: value`` pairs (for /api/show, logs and ``/show parameters``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["stop"] = list(self.stop)
        return out


# name -> the Python type its value must have (ints are fine where floats are asked for)
_FIELD_TYPES: dict[str, type] = {
    "num_predict": int, "num_ctx": int, "num_keep": int, "stop": tuple, "num_batch": int,
    "repeat_penalty": float, "repeat_last_n": int, "presence_penalty": float, "frequency_penalty": float,
    "top_k": int, "typical_p": float, "top_p": float, "min_p": float, "temperature": float,
    "mirostat": int, "mirostat_tau": float, "mirostat_eta": float, "seed": int,
}  # fmt: skip

ACCEPTED_BUT_UNUSED: dict[str, type | tuple[type, ...]] = {
    "numa": bool, "num_gpu": int, "main_gpu": int, "low_vram": bool,
    "f16_kv": bool, "logits_all": bool, "vocab_only": bool, "use_mmap": bool, "use_mlock": bool,
    "embedding_only": bool, "num_thread": int, "tfs_z": (int, float), "penalize_newline": bool,
}  # fmt: skip

# Ranges each option must fall in: (lowest allowed, highest allowed); None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (-1, None), "num_predict": (-2, None), "num_ctx": (1, None), "num_keep": (-1, None), "num_batch": (1, None),
    "repeat_penalty": (0.0, None), "repeat_last_n": (-1, None),
    "top_k": (0, None), "typical_p": (0.0, 1.0), "top_p": (0.0, 1.0), "min_p": (0.0, 1.0),
    "temperature": (0.0, None), "mirostat": (0, 2), "mirostat_tau": (0.0, None), "mirostat_eta": (0.0, None),
}  # fmt: skip


def _default_of(name: str) -> Any:
    return next(f.default for f in fields(Options) if f.name == name)


def _type_word(kind) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    return "a number"


def _validated(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    if kind is tuple:  # stop: one string or a list of strings
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            raise InvalidRequest(f"option 'stop' must be a string or a list of strings, got {value!r}")
        return tuple(s for s in value if s)  # an empty stop string would stop before anything
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"option '{name}' must be {_type_word(kind)}, got {value!r}")
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise InvalidRequest(f"option '{name}' must be an integer, got {value!r}")
            value = int(value)
        if name == "seed" and value == -1:
            return None  # Ollama's "random seed"
    else:
        value = float(value)
        if not math.isfinite(value):
            raise InvalidRequest(f"option '{name}' must be a finite number, got {value!r}")
    low, high = _RANGES.get(name, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"option '{name}' must be {bounds}, got {value!r}")
    return value


def parse_option_text(name: str, text: str) -> Any:
    """Turn the text a user typed (``/set parameter top_k 20``) into the option's value."""
    kind = _FIELD_TYPES.get(name) or ACCEPTED_BUT_UNUSED.get(name)
    if kind is None:
        raise InvalidRequest(f"unknown option '{name}'")
    text = text.strip()
    if kind is tuple:  # /set parameter stop <string> <string> ...
        return text.split()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if kind is int:
            return int(text)
        return float(text)
    except ValueError:
        raise InvalidRequest(f"option '{name}' must be {_type_word(kind if kind in (bool, int) else float)}, got {text!r}") from None
