"""Numba versions of the forward pass's float32 ops: RMSNorm, softmax, RoPE, attention,
and the prefill matrix product ``matmul_nt``.

Each kernel computes exactly what the NumPy function of the same name in
``refllm/kernels/reference.py`` computes (same shapes, float32), in one pass
with no temporaries; ``tests/test_kernels_ops.py`` holds each against it.
Every kernel is its own top-level ``@njit(cache=True)`` function.  (SiLU and
GELU have none: NumPy's own vectorised exp/tanh are faster, see numba_backend.
The softmaxes here compute exp with ``_exp``, which vectorises.)

The kernels run on the calling thread with the GIL released (``nogil``).  In
decode they are small (a few thousand values per token) and run on one thread:
waking a second thread costs more than the work.  In prefill the backend hands
its tile threads (``numba_backend.run_tasks``) one weight tile each for
``matmul_nt``, or a chunk of query tokens for attention.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from refllm.kernels.quantized import FAST

# --------------------------------------------------------------------------- exp

LOG2_E = np.float32(1.4426950408889634)
LN2_HIGH = np.float32(0.693359375)  # ln 2 = LN2_HIGH + LN2_LOW; LN2_HIGH has few bits, so n * LN2_HIGH is exact
LN2_LOW = np.float32(-2.12194440e-4)


@njit(inline="always", fastmath=FAST)
def _exp(x):
    """e**x in float32 for x <= 0 (softmax's exponents, once the largest is subtracted).

    Numba's ``np.exp`` on a scalar calls libm once per value (no SVML here), which LLVM
    cannot vectorise; this one is plain arithmetic, so a loop of it runs 16 lanes at a
    time (measured: 0.1 vs 1.8-3 ns a value).  The classic method (Cephes' expf):

        x = n * ln 2 + r,   n = round(x / ln 2),   |r| <= ln(2) / 2
        e**x = 2**n * e**r, e**r from a degree-7 polynomial,
        2**n = the float32 whose exponent field is n + 127:  | sign 0 | n + 127 (8 bits) | 0 (23 bits) |

    Within 3e-7 of the exact value (relative; NumPy's float32 exp: 6e-8).  Below -87,
    where e**x leaves float32's normal range, it returns e**-87 ~ 1.6e-38 instead of a
    smaller number: nothing to a softmax, whose largest term is 1.
    """
    x = max(x, np.float32(-87.0))
    n = np.floor(x * LOG2_E + np.float32(0.5))
    r = x - n * LN2_HIGH - n * LN2_LOW
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)  # e**r
    two_to_n = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return p * two_to_n

@njit(inline="always", fastmath=FAST)
def _softmax_span(x, out, lo, hi):
    """out[lo:hi] = softmax of x[lo:hi], for 1-D rows (``out`` may be ``x`` itself):
    the largest value subtracted first, so that exp never overflows."""
    largest = np.float32(-np.inf)
    for j in range(lo, hi):
        largest = max(largest, x[j])
    total = np.float32(0.0)
    for j in range(lo, hi):
        e = _exp(x[j] - largest)
        out[j] = e
        total += e
    for j in range(lo, hi):
        out[j] /= total


# --------------------------------------------------------------------------- elementwise


@njit(cache=True, nogil=True, fastmath=FAST)
def rms_norm_rows(x, weight, eps, out):
    """x: f32[rows, d] -> out[rows, d] = x / sqrt(mean(x**2) + eps) * weight.  Reference: rms_norm."""
    rows, d = x.shape
    for r in range(rows):
        sum_squares = np.float32(0.0)
        for i in range(d):
            sum_squares += x[r, i] * x[r, i]
        inv_rms = np.float32(1.0) / np.sqrt(sum_squares / np.float32(d) + np.float32(eps))
        for i in range(d):
            out[r, i] = x[r, i] * inv_rms * weight[i]


@njit(cache=True, nogil=True, fastmath=FAST)
def softmax_rows(x, out):
    """x: f32[rows, n] -> softmax of each row.  Reference: softmax(axis=-1)."""
    for r in range(x.shape[0]):
        _softmax_span(x[r], out[r], 0, x.shape[1])


@njit(cache=True, nogil=True, fastmath=FAST)
def causal_softmax_rows(scores, positions, first_key, window, group, out):
    """Softmax of each row of attention scores over the keys its query may see; 0 elsewhere.

    scores: f32[c * group, n_keys], row r for query token r // group (``group`` query heads
    share a key/value head), which sits at positions[r // group]; column j is the key at
    position first_key + j, visible when it is <= the query's position (and, with a
    window > 0, > position - window).  Reference: the mask + softmax of ``attention``.
    """
    rows, n_keys = scores.shape
    for r in range(rows):
        p = positions[r // group] - first_key  # the query's own key column
        lo = max(0, p - window + 1) if window > 0 else 0
        hi = min(n_keys, p + 1)
        _softmax_span(scores[r], out[r], lo, hi)
        for j in range(lo):
            out[r, j] = 0.0
        for j in range(hi, n_keys):
            out[r, j] = 0.0


# --------------------------------------------------------------------------- matrix product

# matmul_nt works through the prompt in blocks of this many tokens, so the activation
# rows it is using stay in the core's caches while every weight row passes by.
MATMUL_TOKEN_BLOCK = 64


@njit(cache=True, nogil=True, fastmath=FAST)
def matmul_nt(x, w, out, col):
    """out[:, col : col + m] = x @ w.T, the prefill product of ``linear`` for one weight tile.

    x: f32[n, k] (n prompt tokens);  w: f32[m, k] (m dequantized weight rows);
    out: f32[n, >= col + m].  Reference: ``x @ w.T`` in linear.

    Every output is one dot product over k.  They are computed 4 tokens x 4 rows at
    a time, in 16 named sums:

        for p in 0..k:      s[t][j] += x[t, p] * w[j, p]     (t, j in 0..3)

    With reassociation allowed (FAST) LLVM turns each of the 16 sums into one 16-lane
    AVX-512 register (8 lanes with AVX2), so a step over p loads 4 x vectors and 4 w
    vectors and issues 16 fused multiply-adds -- the arithmetic, not the loads, sets
    the pace -- and each register is folded into its scalar once, at the end.  Measured,
    one core, 128 tokens, 64-byte-aligned operands (numba_backend.aligned_empty): ~200
    GFLOP/s at k = 640 and 1024, ~150 at k = 2048 (120-165 unaligned), against 90-105 for
    NumPy's ``x @ w.T`` (OpenBLAS, held to its Haswell kernels by this machine's
    OPENBLAS_CORETYPE); 2 x 4 blocks: 85-115.  Tokens and rows left over from the
    blocks of 4 take one dot product each.
    """
    n, k = x.shape
    m = w.shape[0]
    m4 = m - m % 4
    for t0 in range(0, n, MATMUL_TOKEN_BLOCK):
        t1 = min(n, t0 + MATMUL_TOKEN_BLOCK)
        t4 = t0 + (t1 - t0) // 4 * 4
        for j in range(0, m4, 4):
            for t in range(t0, t4, 4):
                s00 = s01 = s02 = s03 = np.float32(0.0)
                s10 = s11 = s12 = s13 = np.float32(0.0)
                s20 = s21 = s22 = s23 = np.float32(0.0)
                s30 = s31 = s32 = s33 = np.float32(0.0)
                for p in range(k):
                    w0, w1, w2, w3 = w[j, p], w[j + 1, p], w[j + 2, p], w[j + 3, p]
                    x0 = x[t, p]
                    s00 += x0 * w0; s01 += x0 * w1; s02 += x0 * w2; s03 += x0 * w3  # noqa: E702
                    x1 = x[t + 1, p]
                    s10 += x1 * w0; s11 += x1 * w1; s12 += x1 * w2; s13 += x1 * w3  # noqa: E702
                    x2 = x[t + 2, p]
                    s20 += x2 * w0; s21 += x2 * w1; s22 += x2 * w2; s23 += x2 * w3  # noqa: E702
                    x3 = x[t + 3, p]
                    s30 += x3 * w0; s31 += x3 * w1; s32 += x3 * w2; s33 += x3 * w3  # noqa: E702
                c = col + j
                out[t, c], out[t, c + 1], out[t, c + 2], out[t, c + 3] = s00, s01, s02, s03
                out[t + 1, c], out[t + 1, c + 1], out[t + 1, c + 2], out[t + 1, c + 3] = s10, s11, s12, s13
                out[t + 2, c], out[t + 2, c + 1], out[t + 2, c + 2], out[t + 2, c + 3] = s20, s21, s22, s23
                out[t + 3, c], out[t + 3, c + 1], out[t + 3, c + 2], out[t + 3, c + 3] = s30, s31, s32, s33
            for t in range(t4, t1):  # tokens left over: one at a time
                for jj in range(j, j + 4):
                    out[t, col + jj] = _dot(x, t, w, jj, k)
        for j in range(m4, m):  # rows left over
            for t in range(t0, t1):
                out[t, col + j] = _dot(x, t, w, j, k)


@njit(inline="always", fastmath=FAST)
def _dot(x, t, w, j, k):
    """x[t] . w[j] over k values."""
    s = np.float32(0.0)
    for p in range(k):
        s += x[t, p] * w[j, p]
    return s


# --------------------------------------------------------------------------- position


@njit(cache=True, nogil=True, fastmath=FAST)
def rope_inplace(x, positions, inv_freq, neox, mscale):
    """Rotate the first 2 * len(inv_freq) dims of each head of x: f32[n, heads, hd], in place.

    Pairs are (i, i + r/2) when ``neox`` else (2i, 2i + 1).  Reference: rope.
    """
    n, heads, _ = x.shape
    half = inv_freq.shape[0]
    for t in range(n):
        for i in range(half):
            angle = np.float32(positions[t]) * inv_freq[i]
            cos = np.float32(np.cos(angle)) * np.float32(mscale)
            sin = np.float32(np.sin(angle)) * np.float32(mscale)
            for h in range(heads):
                if neox:
                    ia, ib = i, i + half
                else:
                    ia, ib = 2 * i, 2 * i + 1
                a = x[t, h, ia]
                b = x[t, h, ib]
                x[t, h, ia] = a * cos - b * sin
                x[t, h, ib] = a * sin + b * cos


# --------------------------------------------------------------------------- attention


@njit(inline="always", fastmath=FAST)
def _attend_group(q, k_cache, v_cache, positions, scale, window, out, t, kv, scores):
    """Attention of query token t for the query heads that share key/value head ``kv``.

    Per head h of the group: softmax(q[t, h] . k[j] * scale) over the visible keys j,
    times v[j].  Each key and value row is read once for the whole group (GQA: Gemma 3's
    4 query heads share one), not once per head, and it is still in the L1 cache when
    the next head of the group uses it.  scores: f32[group, >= n_keys], scratch.
    """
    heads, hd = q.shape[1], q.shape[2]
    n_ctx, kv_heads, hd_v = v_cache.shape
    group = heads // kv_heads
    h0 = kv * group  # the group's first query head
    last = min(positions[t], n_ctx - 1)
    first = max(0, positions[t] - window + 1) if window > 0 else 0
    n_keys = last - first + 1
    for j in range(n_keys):  # scores[g, j] = q[t, h0 + g] . k[first + j] * scale
        for g in range(group):
            s = np.float32(0.0)
            for i in range(hd):
                s += q[t, h0 + g, i] * k_cache[first + j, kv, i]
            scores[g, j] = s * np.float32(scale)
    for g in range(group):  # softmax over each head's visible keys
        _softmax_span(scores[g], scores[g], 0, n_keys)
        for i in range(hd_v):
            out[t, h0 + g, i] = 0.0
    for j in range(n_keys):  # out[t, h0 + g] = sum over j of probability * v[first + j]
        for g in range(group):
            w = scores[g, j]
            for i in range(hd_v):
                out[t, h0 + g, i] += w * v_cache[first + j, kv, i]


@njit(cache=True, nogil=True, fastmath=FAST)
def attention_rows(q, k_cache, v_cache, positions, scale, window, out):
    """Causal grouped-query attention of the queries ``q`` over the KV cache.

    q: f32[n, heads, hd];  k_cache: f32[n_ctx, kv_heads, hd];  v_cache: f32[n_ctx, kv_heads, hd_v]
    positions: int[n];  window: 0 for none, else a query at p sees keys p - window < j <= p
    out: f32[n, heads, hd_v].  Reference: attention.
    Decode and short batches; prefill runs as matrix products instead (numba_backend.attention).
    """
    n, heads, _ = q.shape
    kv_heads = k_cache.shape[1]
    scores = np.empty((heads // kv_heads, k_cache.shape[0]), dtype=np.float32)  # [group, n_ctx], scratch
    for t in range(n):
        for kv in range(kv_heads):
            _attend_group(q, k_cache, v_cache, positions, scale, window, out, t, kv, scores)
