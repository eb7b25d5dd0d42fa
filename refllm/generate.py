"""Text generation: prompt -> tokens -> (prefill, then sample/decode one token at a time) -> text.

    result = model.generate("Why is the sky blue?", num_predict=64, seed=1)
    print(result.text, result.done_reason, result.eval_count)

    for piece in model.generate("Tell me a story", stream=True):
        if isinstance(piece, GenerationResult):   # the last item: text, tokens and stats
            stats = piece
        else:
            print(piece, end="")                  # a Chunk: a str that also carries .token_ids/.logprobs

What a prompt can be
    str, raw=False   wrapped as one user message (after ``system``, if given) and rendered by the
                     model's chat template, as Ollama's /api/generate does (refllm.tokenizer.chat
                     picks a built-in template, or plain text, when the GGUF has none)
    str, raw=True    tokenized as is (the model's BOS added if its metadata asks for one;
                     ``system`` is ignored, as Ollama ignores it for raw prompts)
    list of int      token ids, used as they are
    list of dict     chat messages {"role": ..., "content": ...} rendered by the chat template

The loop, step by step (``_run``):
    1. prompt -> token ids; check they fit the context (see "Context" below)
    2. reuse what a ``Session`` cache already holds (longest common prefix), prefill the rest
       in batched forward passes (num_batch tokens each) -> logits of the last prompt position [n_vocab]
    3. repeat: [a constraint masks the tokens its grammar forbids (refllm.constrain)]
               sample a token (refllm.sample.Sampler) -> end-of-generation id? stop
               -> decode it to text -> StopMatcher holds back possible stop-sequence prefixes
               -> emit released text -> num_predict reached or context full? stop
               -> forward the token (one position) -> next logits

Context (``num_ctx``, default 4096, capped at the model's training context)
    The prompt must be shorter than num_ctx so that at least one token can be generated:
    otherwise ``InvalidRequest`` names both lengths. Nothing is ever truncated silently.
    A text too long to fit whatever it tokenizes to (``check_text_fits``) is refused the
    same way before it is tokenized.
    Generation stops with done_reason "length" when num_predict tokens are out or the
    context is full.

Stats follow Ollama: durations in nanoseconds; ``prompt_eval_count`` counts the prompt tokens
actually evaluated (not those reused from a session's cache, see ``cached_count``), so that
``refllm run --verbose``'s prompt eval rate is tokens evaluated / time (the API's
``prompt_eval_count`` is the whole prompt, as Ollama reports it);
``eval_count`` counts sampled tokens, including an end-of-generation token.

Cancellation: closing the stream generator (or simply dropping it) stops the loop at once;
a session's cache stays consistent with ``session.tokens``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from refllm.errors import InvalidRequest, UnsupportedModel
from refllm.sample import Options, Sampler, StopMatcher, TokenLogprob, token_logprob


class Chunk(str):
    """One piece of streamed text. It *is* the text (a ``str``), and also carries the ids of the
    tokens sampled since the previous chunk and, when asked for, their ``TokenLogprob``s."""

    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, token_ids: Sequence[int] = (), logprobs: Sequence[TokenLogprob] = ()):
        chunk = super().__new__(cls, text)
        chunk.token_ids = tuple(token_ids)
        chunk.logprobs = tuple(logprobs)
        return chunk


@dataclass
class GenerationResult:
    text: str  # the generated text, stop sequence excluded
    tokens: list[int]  # generated token ids (an end-of-generation token is not included)
    prompt_tokens: list[int]  # the whole prompt as token ids
    done_reason: str  # "stop" (end-of-generation token or stop sequence) or "length"
    logprobs: list[TokenLogprob] | None = None  # one per generated token (as .tokens), when asked for
    prompt_eval_count: int = 0  # prompt tokens evaluated in this call
    cached_count: int = 0  # prompt tokens reused from the session's cache
    eval_count: int = 0  # tokens sampled
    load_duration: int = 0  # ns spent getting the model ready (tokenizer, weights) in this call
    prompt_eval_duration: int = 0  # ns
    eval_duration: int = 0  # ns
    total_duration: int = 0  # ns, the whole call


@dataclass
class Session:
    """A KV cache kept between calls and the tokens it holds (``tokens[i]`` is at position i).

    Pass the same session to successive ``generate`` calls (a chat, a server session): the
    longest common prefix of ``tokens`` and the new prompt is not evaluated again.
    """

    cache: Any = None  # the model's KVCache, made on first use
    tokens: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.cache, self.tokens = None, []


def generate(
    model,
    prompt: str | Sequence[int] | Sequence[dict],
    *,
    raw: bool = False,
    stream: bool = False,
    system: str | None = None,
    images: Sequence | None = None,
    logprobs: bool = False,
    top_logprobs: int = 0,
    session: Session | None = None,
    options: Options | dict | None = None,
    constraint: Any = None,
    **more_options: Any,
) -> GenerationResult | Iterator[Chunk | GenerationResult]:
    """Generate from ``model``. Options use Ollama's names, as ``options=`` and/or keywords.

    Returns a ``GenerationResult``; with ``stream=True`` an iterator of ``Chunk``s ending with
    the ``GenerationResult``. Bad input raises ``InvalidRequest`` before any work is done.

    ``constraint``: a grammar (``refllm.constrain.TokenConstraint``) that restricts every
    sampled token: ``mask(logits)`` before sampling, ``advance(token)`` after, and
    generation stops once ``finished``.
    """
    if isinstance(options, Options):
        opts = options.updated(more_options)
    else:
        opts = Options.from_dict({**(options or {}), **more_options})
    if not isinstance(top_logprobs, int) or isinstance(top_logprobs, bool) or not 0 <= top_logprobs <= 20:
        raise InvalidRequest(f"top_logprobs must be an integer from 0 to 20, got {top_logprobs!r}")
    if images:
        raise UnsupportedModel(f"model '{model.name}' does not support images")

    started = time.perf_counter_ns()
    load_duration = prepare(model)
    num_ctx = context_size(model, opts)
    check_prompt_text_fits(model, prompt, num_ctx, raw=raw, system=system)  # a huge text: refused before rendering ...
    prompt_ids = prompt_token_ids(model, prompt, raw=raw, system=system, num_ctx=num_ctx)  # ... or before tokenizing
    check_prompt_fits(model, len(prompt_ids), num_ctx)
    events = _run(model, prompt_ids, opts, num_ctx, session or Session(), logprobs or top_logprobs > 0, top_logprobs, started, load_duration, constraint)
    if stream:
        return events
    for event in events:
        if isinstance(event, GenerationResult):
            return event
    raise AssertionError("the generation loop ended without a result")  # pragma: no cover


# --------------------------------------------------------------------------- the loop


def _run(model, prompt_ids, opts: Options, num_ctx, session: Session, want_logprobs, top_n, started, load_duration, constraint=None):
    tokenizer = model.tokenizer
    end_ids = set(tokenizer.eog_ids)
    sampler = Sampler(opts, model.n_vocab)
    stops = StopMatcher(opts.stop)
    decoder = tokenizer.decoder()  # streaming detokenizer: holds bytes of incomplete characters
    max_new = opts.num_predict if opts.num_predict >= 0 else num_ctx  # -1/-2: until the context is full

    # 1. prefill: reuse the session's cached prefix, evaluate the rest in batched passes of
    #    num_batch tokens (matrix-matrix work; memory bounded however long the prompt is)
    t0 = time.perf_counter_ns()
    cached = _reuse_prefix(model, session, prompt_ids, num_ctx)
    for start in range(cached, len(prompt_ids), opts.num_batch):
        logits = _forward(model, session, prompt_ids[start : start + opts.num_batch])  # [n_vocab], last position
    prompt_eval_duration = time.perf_counter_ns() - t0

    # 2. decode: sample, emit, feed back
    t0 = time.perf_counter_ns()
    generated: list[int] = []
    all_logprobs: list[TokenLogprob] = []
    pending_ids: list[int] = []  # sampled tokens whose text is not out yet
    pending_logprobs: list[TokenLogprob] = []
    text_parts: list[str] = []
    context = list(prompt_ids)  # what the repetition penalties look back over
    eval_count = 0
    done_reason = "length"
    while len(generated) < max_new:
        allowed = logits if constraint is None else constraint.mask(logits)  # grammar: forbidden tokens -> -inf
        token = sampler.sample(allowed, context, num_ctx)
        eval_count += 1
        if token in end_ids:
            done_reason = "stop"
            break
        if want_logprobs:
            lp = token_logprob(logits, token, top_n, tokenizer.token_bytes)  # raw logits, before any sampler
            all_logprobs.append(lp)
            pending_logprobs.append(lp)
        if constraint is not None:
            constraint.advance(token)
        generated.append(token)
        context.append(token)
        pending_ids.append(token)

        released = stops.push(decoder.push(token))  # text that can no longer be part of a stop sequence
        if released:
            text_parts.append(released)
            yield Chunk(released, pending_ids, pending_logprobs)
            pending_ids, pending_logprobs = [], []
        if stops.stopped or (constraint is not None and constraint.finished):
            done_reason = "stop"
            break
        if len(generated) >= max_new or len(session.tokens) >= num_ctx:
            break  # "length": num_predict reached, or no room left to feed the token back
        logits = _forward(model, session, [token])  # [n_vocab] for the next position

    # 3. whatever text is still held back (an incomplete UTF-8 sequence, a possible stop prefix)
    tail = stops.push(decoder.flush()) + stops.flush()
    if tail or pending_ids:
        text_parts.append(tail)
        yield Chunk(tail, pending_ids, pending_logprobs)
    eval_duration = time.perf_counter_ns() - t0

    yield GenerationResult(
        text="".join(text_parts),
        tokens=generated,
        prompt_tokens=list(prompt_ids),
        done_reason=done_reason,
        logprobs=all_logprobs if want_logprobs else None,
        prompt_eval_count=len(prompt_ids) - cached,
        cached_count=cached,
        eval_count=eval_count,
        load_duration=load_duration,
        prompt_eval_duration=prompt_eval_duration,
        eval_duration=eval_duration,
        total_duration=time.perf_counter_ns() - started,
    )


def _reuse_prefix(model, session: Session, prompt_ids: list[int], num_ctx: int) -> int:
    """Keep the longest common prefix of the session's cache and the prompt; return its length.

    At least the last prompt token is always evaluated again: its logits pick the first new token.
    """
    if session.cache is None or session.cache.n_ctx != num_ctx:
        session.cache, session.tokens = model.new_cache(num_ctx), []
    common = 0
    for cached_id, prompt_id in zip(session.tokens, prompt_ids):
        if cached_id != prompt_id:
            break
        common += 1
    common = min(common, len(prompt_ids) - 1)
    if common < len(session.tokens):
        session.cache.truncate(common)
        del session.tokens[common:]
    return common


def _forward(model, session: Session, ids: list[int]) -> np.ndarray:
    """Feed ``ids`` into the session's cache; keep ``session.tokens`` in step even if interrupted."""
    n_before = len(session.tokens)
    try:
        logits = model.forward(ids, session.cache)  # [n_vocab], last position
    except BaseException:
        session.cache.truncate(n_before)  # e.g. Ctrl-C in the middle of a long prefill
        raise
    session.tokens.extend(ids)
    return logits


def prepare(model) -> int:
    """Build what the model builds lazily (tokenizer, chat template, weights) and load its
    kernels; return the ns it took.

    ``generate`` calls it (and reports the time as load_duration); the CLI calls it first,
    under its loading spinner, and the server once per loaded model.  Loading the Numba
    kernels here (from Numba's cache, or compiling them on a first run, with its notice)
    keeps that pause out of the middle of an answer: decode's kernels would otherwise
    load at the first generated token.
    """
    t0 = time.perf_counter_ns()
    model.tokenizer  # noqa: B018  (a cached_property: built on first use)
    getattr(model, "chat_template", None)
    transformer = getattr(model, "transformer", None)  # config and weights (a cached_property), where the model has them
    if transformer is not None and getattr(model, "backend", None) == "numba":
        from refllm.kernels.numba_backend import warm_up

        warm_up({info.ggml_type for info in model.gguf.tensors.values()})
    return time.perf_counter_ns() - t0


# --------------------------------------------------------------------------- prompts


def context_size(model, opts: Options) -> int:
    """``num_ctx`` as asked, capped at the model's training context."""
    return min(opts.num_ctx, model.n_ctx_train)


def check_prompt_fits(model, n_tokens: int, num_ctx: int, *, at_least: bool = False) -> None:
    """The context rule: a prompt of ``n_tokens`` must leave room for one generated token."""
    if n_tokens >= num_ctx:
        raise InvalidRequest(
            f"the prompt is {'at least ' if at_least else ''}{n_tokens} tokens but the context (num_ctx) is {num_ctx}: "
            f"shorten the prompt or raise num_ctx (this model allows up to {model.n_ctx_train})"
        )


def check_text_fits(model, n_chars: int, num_ctx: int) -> None:
    """The context rule before tokenizing: refuse a text whose length alone cannot fit.

    No token stands for more than ``tokenizer.longest_token_chars`` characters (Gemma 3: 31,
    SmolLM2: 81), so C characters give at least C / that many tokens. A 16 MB prompt is
    refused at once instead of after its BPE (~20 s and ~2 GB for SmolLM2's). A tokenizer
    that does not tell its longest token is left to the check after tokenizing.
    """
    fewest_tokens = getattr(model.tokenizer, "fewest_tokens", None)
    if fewest_tokens is not None:
        check_prompt_fits(model, fewest_tokens(n_chars), num_ctx, at_least=True)


def check_prompt_text_fits(model, prompt, num_ctx: int, *, raw: bool = False, system: str | None = None) -> None:
    """``check_text_fits`` for a prompt in any form, before anything renders or tokenizes it
    (its texts are part of whatever gets tokenized, so their length is a lower bound too)."""
    check_text_fits(model, prompt_text_chars(prompt, raw=raw, system=system), num_ctx)


def prompt_text_chars(prompt, *, raw: bool = False, system: str | None = None) -> int:
    """Characters of text in a prompt: a string's (with the system prompt a chat-rendered
    string always gets), or its messages' contents (token ids: 0)."""
    if isinstance(prompt, str):
        return len(prompt) + (len(system) if system and not raw else 0)
    if isinstance(prompt, (list, tuple)):
        return sum(len(m["content"]) for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str))
    return 0


def prompt_token_ids(model, prompt, *, raw: bool = False, system: str | None = None,
                     num_ctx: int | None = None) -> list[int]:
    """Turn any accepted prompt form into token ids (see the module docstring).

    With ``num_ctx``, a rendered chat text too long for it is refused before tokenizing
    (``check_text_fits``; ``generate`` checks the prompt's own texts before this).
    """
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        if raw:  # the caller wrote any special tokens; BOS as the model's metadata asks (like llama.cpp)
            return model.tokenize(prompt, add_special=True, parse_special=True)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return chat_token_ids(model, messages, num_ctx)
    if isinstance(prompt, np.ndarray):
        prompt = prompt.tolist()
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in prompt):
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < model.n_vocab]
        if bad:
            raise InvalidRequest(f"token id {bad[0]} is out of range (the vocabulary has {model.n_vocab} tokens)")
        return ids
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        messages = _checked_messages(prompt)
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        return chat_token_ids(model, messages, num_ctx)
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise InvalidRequest("the prompt is empty")
    raise InvalidRequest("prompt must be a string, a list of token ids or a list of chat messages")


def chat_token_ids(model, messages: list[dict], num_ctx: int | None = None) -> list[int]:
    """Messages -> the model's chat template -> ids, ready for the assistant's turn.

    A final assistant message (without tool calls) is continued, as Ollama does: the text
    ends right after its content and the answer goes on from there (``final_assistant_prefill``).
    ``encode_chat`` parses the template's special tokens but keeps the messages' own texts
    plain (a user typing "<|im_end|>" gets text, not a turn marker), and adds BOS once.
    """
    from refllm.chat.turn import final_assistant_prefill

    if final_assistant_prefill(messages) is not None:
        text = model.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True)
    else:
        text = model.apply_chat_template(messages, add_generation_prompt=True)
    if num_ctx is not None:
        check_text_fits(model, len(text), num_ctx)  # the rendered text: what gets tokenized
    contents = [m["content"] for m in messages if isinstance(m.get("content"), str)]
    return model.tokenizer.encode_chat(text, contents)


def _checked_messages(messages) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise InvalidRequest(f"message {i} has no 'role'")
        if content is not None and not isinstance(content, str):
            raise InvalidRequest(f"message {i}: 'content' must be a string")
        out.append(dict(m))
    return out


