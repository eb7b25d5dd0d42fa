"""Grammar -> token mask, one decoding step at a time (constrained decoding).

A grammar (a JSON schema, or a Lark grammar for tool calls) says which texts are allowed.
At every step of generation the ``TokenConstraint`` answers: which of the vocabulary's
tokens can come next so that the text so far can still be completed into an allowed text?
Forbidden tokens get logit -inf before sampling, so whatever the sampler draws keeps the
output on the grammar, and the end-of-generation token is allowed only once the text is
complete. The output therefore always parses.

    table = token_table(model.tokenizer, model.n_vocab)   # once per vocabulary (cached)
    constraint = TokenConstraint(table, grammar)           # once per request
    every step:   logits = constraint.mask(logits)         # [n_vocab] -> [n_vocab], -inf where forbidden
                  token = sampler.sample(logits)
                  constraint.advance(token)                # the grammar moves on by that token's bytes

The mask itself comes from llguidance (the engine llama.cpp and vLLM can use): it walks a
token trie of the vocabulary against an Earley parser with a lazy lexer. We chose it by
measurement over writing our own (``python tools/bench_constrain.py``, 2 shared cores): on
Gemma 3's 262,144-token vocabulary one mask costs 0.64 ms to compute (median) plus 0.35 ms to
apply to the logits with NumPy, against a 76 ms decode step: about 1.3% (SmolLM2: 0.43 ms
against 38 ms). Building the vocabulary table is the one real cost: ~3 s for Gemma 3 (0.7 s
for SmolLM2), once per model (``token_table`` caches it). A readable pure-Python mask would have to test each of the
262k tokens against the parser state at every step (hundreds of milliseconds).

Bit layout of llguidance's mask: int32 words, token ``t`` is allowed when bit ``t % 32`` of
word ``t // 32`` is set (little-endian), so ``np.unpackbits(words.view(uint8), "little")``
gives one 0/1 byte per token.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from refllm.constrain.llamacpp_objects import llamacpp_objects
from refllm.errors import InvalidRequest, RefllmError

try:
    import llguidance
    import llguidance.numpy as llguidance_numpy
except ImportError:  # pragma: no cover - llguidance is an install requirement
    llguidance = None

SPECIAL_PREFIX = b"\xff"  # llguidance's mark for a control token: never matched by grammar text


class ConstraintError(RefllmError):
    """The grammar engine failed in the middle of a generation (a limit it hit, a bug)."""


def _require_llguidance() -> None:
    if llguidance is None:  # pragma: no cover
        raise InvalidRequest("structured outputs need the 'llguidance' package: pip install llguidance")


# --------------------------------------------------------------------------- vocabulary table


class _VocabularyForLLG(llguidance.TokenizerWrapper if llguidance else object):
    """What llguidance needs to know about a vocabulary: every token's bytes, and an encoder.

    Control tokens (<end_of_turn>, <|im_end|>, ...) carry the 0xFF prefix so that grammar text
    such as "<end_of_turn>" is never produced by a control token.
    """

    def __init__(self, tokenizer, n_vocab: int):  # noqa: super().__init__ wants another tokenizer type
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_id
        self.bos_token_id = tokenizer.bos_id
        self.special_token_ids = []
        self.is_tokenizer_wrapper = True
        self.tokens = [_token_bytes_for_llg(tokenizer, i) for i in range(n_vocab)]

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self.tokenizer.encode(text, add_special=False)


def _token_bytes_for_llg(tokenizer, token_id: int) -> bytes:
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is not None and token_id >= vocab.size:
        return b""  # the output layer can be wider than the vocabulary: those ids never appear
    data = tokenizer.token_bytes(token_id)
    is_control = vocab.is_special(token_id) if vocab is not None else token_id in _ends_and_bos(tokenizer)
    return SPECIAL_PREFIX + data if is_control else data


def _ends_and_bos(tokenizer) -> set[int]:
    return set(tokenizer.eog_ids) | {t for t in (tokenizer.bos_id, tokenizer.eos_id) if t is not None}


_tables: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_tables_lock = threading.Lock()


def token_table(tokenizer, n_vocab: int):
    """llguidance's view of a vocabulary, built once per tokenizer (seconds for 262k tokens)."""
    _require_llguidance()
    with _tables_lock:
        table = _tables.get(tokenizer)
        if table is None or table.vocab_size != n_vocab:
            wrapper = _VocabularyForLLG(tokenizer, n_vocab)
            table = llguidance.LLTokenizer(wrapper, n_vocab=n_vocab, eos_token=sorted(tokenizer.eog_ids))
            _tables[tokenizer] = table
        return table


# --------------------------------------------------------------------------- grammars


JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""Compact one-line JSON with a space after ',' and ':' (what models write most naturally).
Flexible whitespace would let a small model loop on newlines forever."""


def json_schema_grammar(schema: dict) -> str:
    """A JSON schema -> llguidance grammar text; ``InvalidRequest`` names unsupported features.

    Objects follow llama.cpp's rules, not the specification's: no extra keys unless
    ``additionalProperties`` allows them, required keys first (``llamacpp_objects``)."""
    _require_llguidance()
    try:
        # overrides: a schema's own "x-guidance" may change the layout but never make the
        # compiler lenient (lenient = unknown keywords silently ignored)
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            llamacpp_objects(schema), defaults=JSON_LAYOUT, overrides={"lenient": False})
    except ValueError as e:
        raise InvalidRequest(f"invalid JSON schema: {e}") from None
    return checked(grammar, "or invalid JSON schema")


def lark_grammar(lark: str) -> str:
    _require_llguidance()
    return checked(llguidance.LLMatcher.grammar_from_lark(lark), "grammar")


def checked(grammar: str, what: str) -> str:
    """The grammar if llguidance can compile it, else a 400 with llguidance's reason."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise InvalidRequest(f"unsupported {what}: {'; '.join(messages)}")
    return grammar


# --------------------------------------------------------------------------- the per-request constraint


class TokenConstraint:
    """One request's grammar state: ``mask(logits)`` before sampling, ``advance(token)`` after."""

    def __init__(self, table, grammar: str):
        self.matcher = llguidance.LLMatcher(table, grammar, log_level=0)
        if self.matcher.is_error():
            raise InvalidRequest(f"unsupported grammar: {self.matcher.get_error()}")
        self.words = llguidance_numpy.allocate_token_bitmask(1, table.vocab_size)  # [1, ceil(n_vocab / 32)] int32

    def allowed(self) -> np.ndarray:
        """[n_vocab] bool: the tokens that keep the output on the grammar."""
        llguidance_numpy.fill_next_token_bitmask(self.matcher, self.words)
        self._check()
        bits = np.unpackbits(self.words.view(np.uint8), bitorder="little")  # [32 * n_words] 0/1
        return bits.view(bool)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """[n_vocab] logits -> [n_vocab] logits with -inf for every forbidden token."""
        allowed = self.allowed()[: logits.shape[-1]]
        return np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32, copy=False)

    def advance(self, token_id: int) -> None:
        self.matcher.consume_token(int(token_id))
        self._check()

    @property
    def finished(self) -> bool:
        """The grammar is complete and allows nothing more (only the end-of-generation token)."""
        return self.matcher.is_stopped()

    def _check(self) -> None:
        if self.matcher.is_error():
            raise ConstraintError(f"constrained decoding failed: {self.matcher.get_error()}")
