"""Offline evaluation over a text file: perplexity, and KL divergence against saved base logits.

    refllm eval perplexity MODEL FILE [--ctx 512] [--stride 256]
    refllm eval kld BASE_MODEL FILE --save-base base.npz      # once, with the reference model
    refllm eval kld MODEL FILE --base base.npz                # then with each model under test

Sliding window: the text's tokens are read in windows of ``ctx`` tokens that start every
``stride`` tokens; each window begins with BOS (where the model uses one, as llama.cpp's
perplexity tool does) and scores only the tokens no earlier window scored, so every token
is scored once, with at least ``ctx - stride`` tokens of context after the first window.

    PPL = exp(mean over tokens of -log p(token | context))

KL divergence reports what llama.cpp's ``perplexity --kl-divergence`` does: mean KL(base || model)
with its standard error, percentiles, and how often both have the same most likely token.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from refllm.errors import InvalidRequest
from refllm.sample.samplers import log_softmax

BASE_FORMAT = "refllm-kld-base-1"


def text_tokens(model, path: str | Path) -> list[int]:
    """The file's tokens, without BOS (the windows add it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"cannot read {path}: {e}") from None
    tokens = model.tokenize(text, add_special=False, parse_special=False)
    if len(tokens) < 2:
        raise InvalidRequest(f"{path}: the text has {len(tokens)} token(s); at least 2 are needed")
    return tokens


def check_window(model, ctx: int, stride: int) -> None:
    if not 2 <= ctx <= model.n_ctx_train:
        raise InvalidRequest(f"--ctx must be 2..{model.n_ctx_train} (the model's window), got {ctx}")
    if not 1 <= stride <= ctx - 1:
        raise InvalidRequest(f"--stride must be 1..ctx-1 ({ctx - 1}), got {stride}")


def windows(n_tokens: int, ctx: int, stride: int, bos: bool) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first_scored): window tokens[begin:end], scoring tokens[first_scored:end].

    With BOS the window holds ctx - 1 text tokens and the very first token is scored too.
    """
    span = ctx - 1 if bos else ctx
    scored_up_to = 0 if bos else 1  # without BOS nothing predicts the first token
    begin = 0
    while scored_up_to < n_tokens:
        end = min(begin + span, n_tokens)
        if end > scored_up_to:
            yield begin, end, max(scored_up_to, begin if bos else begin + 1)
            scored_up_to = end
        begin += stride


def scored_log_probs(model, tokens: list[int], ctx: int, stride: int,
                     progress: Callable[[dict], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
    """(token, float64[n_vocab] log-probabilities it was predicted with), for every scored token in order."""
    check_window(model, ctx, stride)
    bos = bool(model.tokenizer.add_bos and model.tokenizer.bos_id is not None)
    plan = list(windows(len(tokens), ctx, stride, bos))
    for i, (begin, end, first) in enumerate(plan):
        if progress:
            progress({"status": "evaluating windows", "total": len(plan), "completed": i, "unit": "windows"})
        inputs = ([model.tokenizer.bos_id] if bos else []) + tokens[begin:end]
        logits = model.logits(inputs)  # [len(inputs), n_vocab]
        offset = 1 if bos else 0  # row r predicts inputs[r + 1]; tokens[t] sits at inputs[t - begin + offset]
        for t in range(first, end):
            yield tokens[t], log_softmax(logits[t - begin + offset - 1])
    if progress:
        progress({"status": "evaluating windows", "total": len(plan), "completed": len(plan), "unit": "windows"})


@dataclass
class Perplexity:
    n_tokens: int
    mean_nll: float  # nats per token
    ppl: float
    ppl_stderr: float  # from the standard error of the mean NLL (as llama.cpp reports "± x")


def perplexity_of(nlls: list[float]) -> Perplexity:
    nll = np.asarray(nlls, dtype=np.float64)
    mean = float(nll.mean())
    stderr = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else 0.0
    ppl = math.exp(mean)
    return Perplexity(len(nll), mean, ppl, ppl * stderr)


def perplexity(model, path, ctx: int = 512, stride: int | None = None, progress=None,
               save_base: str | Path | None = None) -> Perplexity:  # fmt: skip
    """Perplexity of ``model`` over the text file; with ``save_base`` also write the log-probs for ``kld``."""
    tokens = text_tokens(model, path)
    stride = stride or max(1, ctx // 2)
    nlls, rows = [], []
    for token, log_probs in scored_log_probs(model, tokens, ctx, stride, progress):
        nlls.append(-float(log_probs[token]))
        if save_base is not None:
            rows.append(log_probs.astype(np.float32))
    if save_base is not None:
        with open(save_base, "wb") as f:  # a file object: np.savez would otherwise append ".npz"
            np.savez_compressed(f, format=np.array(BASE_FORMAT), tokens=np.array(tokens, dtype=np.int32),
                                ctx=np.array(ctx), stride=np.array(stride), log_probs=np.stack(rows))  # fmt: skip
    return perplexity_of(nlls)


@dataclass
class KLDivergence:
    n_tokens: int
    model: Perplexity
    base: Perplexity
    mean_kl: float
    mean_kl_stderr: float
    percentiles: dict[str, float]  # "max", "99.9%", ..., "min"
    same_top: float  # fraction of tokens where both have the same most likely token
    same_top_stderr: float
    rms_delta_p: float  # root mean square of p_model(token) - p_base(token)


@dataclass
class BaseLogits:
    """What ``refllm eval kld --save-base`` wrote: the text's tokens, the windows, the base's log-probs."""

    path: str
    tokens: list[int]
    ctx: int
    stride: int
    log_probs: np.ndarray  # [n_scored, n_vocab] float32


def load_base(path: str | Path) -> BaseLogits:
    """Read a base file; anything else (a text file, a lone .npy, a damaged zip) is one InvalidRequest naming it."""
    not_a_base = (f"{path} is not a base file written by `refllm eval kld --save-base` "
                  "(expected an .npz of the base model's log-probabilities)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except OSError as e:  # missing, a directory, no permission
        raise InvalidRequest(f"cannot read base logits {path}: {e.strerror or e}") from None
    except (ValueError, EOFError, zipfile.BadZipFile):  # not NumPy's format at all (ValueError says "allow_pickle")
        raise InvalidRequest(not_a_base) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # one .npy array
        raise InvalidRequest(not_a_base)
    with loaded:
        if not {"format", "tokens", "ctx", "stride", "log_probs"} <= set(loaded.files):
            raise InvalidRequest(not_a_base)
        try:
            if str(loaded["format"]) != BASE_FORMAT:
                raise InvalidRequest(not_a_base)
            return BaseLogits(path=str(path), tokens=loaded["tokens"].tolist(), ctx=int(loaded["ctx"]),
                              stride=int(loaded["stride"]), log_probs=loaded["log_probs"])
        except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile):  # a damaged or hand-made member
            raise InvalidRequest(f"{path}: the base file is damaged; write it again with --save-base") from None


def kl_divergence(model, path, base: BaseLogits, progress=None) -> KLDivergence:
    """KL(base || model) at every scored token of the text file, with the base's windows (``load_base``)."""
    tokens = text_tokens(model, path)
    if tokens != base.tokens:
        raise InvalidRequest(f"{base.path} was saved from other tokens (another text, or a model with another tokenizer)")
    base_lp = base.log_probs  # [n_scored, n_vocab]
    if base_lp.ndim != 2 or base_lp.shape[1] != model.n_vocab:
        raise InvalidRequest(f"{base.path} has log-probs of shape {base_lp.shape}, the model's vocabulary is {model.n_vocab}")
    kls, same, delta_p, nll_model, nll_base = [], [], [], [], []
    scored = scored_log_probs(model, tokens, base.ctx, base.stride, progress)
    for i, (token, log_q) in enumerate(scored):
        log_p = base_lp[i].astype(np.float64)
        p = np.exp(log_p)
        kls.append(float(max(0.0, np.sum(p * (log_p - log_q)))))  # KL(base || model), full vocabulary
        same.append(int(np.argmax(log_p)) == int(np.argmax(log_q)))
        delta_p.append(math.exp(log_q[token]) - math.exp(log_p[token]))
        nll_model.append(-float(log_q[token]))
        nll_base.append(-float(log_p[token]))
    kl = np.array(kls)
    n = len(kl)
    same_top = float(np.mean(same))
    marks = {"max": 100, "99.9%": 99.9, "99%": 99, "95%": 95, "90%": 90, "median": 50, "10%": 10, "5%": 5, "1%": 1, "min": 0}
    return KLDivergence(
        n_tokens=n, model=perplexity_of(nll_model), base=perplexity_of(nll_base),
        mean_kl=float(kl.mean()), mean_kl_stderr=float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        percentiles={name: float(np.percentile(kl, q)) for name, q in marks.items()},
        same_top=same_top, same_top_stderr=math.sqrt(same_top * (1 - same_top) / n) if n > 1 else 0.0,
        rms_delta_p=float(np.sqrt(np.mean(np.square(delta_p)))),
    )  # fmt: skip
