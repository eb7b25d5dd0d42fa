"""Where llama.cpp rounds, op by op: explaining the distance between llama.cpp and float32.

refllm computes in float32 like HF transformers and agrees with it to ~1e-11 nats;
llama.cpp's CPU backend (ggml) sits ~0.002-0.007 nats (mean KL) away from both.  This
module writes down every place ggml rounds where a float32 engine does not, as small
functions, and ``check_layer`` proves the list complete: fed llama.cpp's own
intermediate tensors (captured with its eval callback by
``tools/capture_llamacpp_tensors.py``), each op below reproduces llama.cpp's output
to float32 summation noise (~1e-7), where the float32 op is ~1e-3 away.

The places, with the ggml source that does each (ggml/src/ggml-cpu/):

1. Activations before a matrix product (ggml-cpu.c, ``type_traits_cpu[].vec_dot_type``).
   ggml never multiplies float32 activations by quantized weights: it first quantizes
   the activation row to an 8-bit type, then takes integer dot products per block:

       weight type                       activation rounded to
       F32                               (unchanged)
       F16 / BF16                        F16 / BF16
       Q4_0 Q5_0 Q8_0 IQ4_NL MXFP4       Q8_0: blocks of 32, int8 q, d = fp16(amax / 127)
       Q4_1 Q5_1                         Q8_1: Q8_0 plus s = fp16(d * sum(q))
       K-quants, IQ2/IQ3/IQ4_XS, TQ      Q8_K: blocks of 256, int8 q, d float32

   An integer dot product of a weight block with a quantized activation block equals
   the float dot product of the dequantized weight with the DEquantized activation
   (both are ``sum w_i * d_a * q_i``), so ``linear`` rounds the activation (quantize,
   dequantize) and runs the float32 ``linear``.  One term is not linear: Q4_1/Q5_1
   blocks add ``m_w * s_a`` with ``s_a`` rounded to fp16 on its own (``q8_1_offset``).
2. The KV cache holds float16 (llama.cpp's default ``type_k``/``type_v``).
3. Attention without flash attention (llama.cpp's default here): ``K . q`` is a product
   with an F16 weight, so q is rounded to fp16 (rule 1); the softmax is float32; the
   probabilities are rounded to fp16 before they multiply the F16 V (rule 1 again).
4. GELU reads a table of fp16 results indexed by the fp16-rounded input (vec.h,
   ``GGML_GELU_FP16``): ``fp16(gelu(fp16(x)))``; exact outside [-10, 10].
5. RoPE angles come from a running float32 product (ops.cpp, ``rope_cache_init``):
   ``theta = p; for each pair: angle = theta; theta *= theta_scale``.
6. RMSNorm sums squares in double, then ``y = (x * (1 / sqrtf(mean + eps))) * w``;
   not a rounding step, but bit-exact agreement here keeps step 1 from flipping.

Why greedy texts still part at near-ties: matching every op is not matching every
bit.  ggml's SIMD kernels add the float32 block sums in their own order, a 1e-7
relative difference; once in a few layers such a difference moves an activation
across a Q8 or fp16 rounding boundary, and that one-quantum step (~1e-3) grows
through the remaining layers to the same end-to-end distance as plain float32.
Only a bit-exact copy of ggml's kernels (summation order, its exp/silu polynomials,
libm's cosf) would give llama.cpp's tokens at every near-tie.

Reference: llama.cpp as vendored by llama-cpp-python 0.3.36 (the engine that wrote
golden/logits/): ggml-cpu/{ggml-cpu.c, arch/x86/quants.c, vec.h, ops.cpp},
ggml/src/ggml-quants.c (quantize_row_q8_K_ref).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from gguf import GGMLQuantizationType as T

from refllm.gguf import TensorInfo
from refllm.kernels import reference
from refllm.kernels.reference import NUMPY_BACKEND, Backend, softmax
from refllm.quant.quantizers import f16_round_trip, signed_extreme

Q8_0_ACTIVATIONS = {T.Q4_0, T.Q5_0, T.Q8_0, T.IQ4_NL, T.MXFP4}
Q8_1_ACTIVATIONS = {T.Q4_1, T.Q5_1}
F16_ACTIVATIONS = {T.F16}
BF16_ACTIVATIONS = {T.BF16}
FLOAT32_ACTIVATIONS = {T.F32}
# every other type (256-value super-blocks) multiplies Q8_K activations


# --------------------------------------------------------------------------- 1. activations


def round_q8_0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize rows to Q8_0 blocks and back, as arch/x86/quants.c's quantize_row_q8_0.

        block of 32:  d (fp16) | q[32] (int8)
        amax = max |x|;  d = amax / 127;  q = round_half_even(x * (127 / amax))

    (The portable reference rounds half away from zero and multiplies by 1 / d; the
    x86 code that runs here does the above.  Exact halves are rare either way.)

    x: f32[n, k], k a multiple of 32
    -> (rounded f32[n, k], d f32[n, k/32] before its fp16 rounding, q int32[n, k/32, 32])
    """
    n, k = x.shape
    blocks = x.reshape(n, k // 32, 32)  # [n, nb, 32]
    amax = np.abs(blocks).max(axis=-1)  # [n, nb]
    d = amax / np.float32(127)  # [n, nb]
    with np.errstate(divide="ignore"):
        multiplier = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * multiplier[..., None]).astype(np.int32)  # [n, nb, 32]
    rounded = q * f16_round_trip(d)[..., None]  # [n, nb, 32]
    return rounded.reshape(n, k).astype(np.float32), d, q


def round_q8_k(x: np.ndarray) -> np.ndarray:
    """Quantize rows to Q8_K super-blocks and back, as ggml-quants.c's quantize_row_q8_K_ref.

        block of 256:  d (float32) | q[256] (int8) | bsums[16] (int16, sums of 16 q)
        max = the value of largest |x|, sign kept;  iscale = -127 / max
        q = min(127, round_half_even(x * iscale));  d = 1 / iscale

    x: f32[n, k], k a multiple of 256 -> f32[n, k]
    """
    n, k = x.shape
    blocks = x.reshape(n * (k // 256), 256)  # [n * nb, 256]
    extreme = signed_extreme(blocks)  # [n * nb, 1]
    with np.errstate(divide="ignore"):
        iscale = np.where(extreme != 0, np.float32(-127) / extreme, np.float32(0)).astype(np.float32)
        d = np.where(iscale != 0, np.float32(1) / iscale, np.float32(0)).astype(np.float32)
    q = np.minimum(127, np.rint(blocks * iscale))  # [n * nb, 256]
    return (q * d).reshape(n, k).astype(np.float32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, round half to even (ggml's GGML_FP32_TO_BF16)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    return ((bits + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)).view(np.float32)


def round_activations(x: np.ndarray, weight_type) -> np.ndarray:
    """The activation as llama.cpp multiplies it by a weight of ``weight_type``.  [n, k] -> [n, k]"""
    if weight_type in FLOAT32_ACTIVATIONS:
        return x
    if weight_type in F16_ACTIVATIONS:
        return f16_round_trip(x)
    if weight_type in BF16_ACTIVATIONS:
        return round_bf16(x)
    if weight_type in Q8_0_ACTIVATIONS or weight_type in Q8_1_ACTIVATIONS:
        return round_q8_0(x)[0]
    return round_q8_k(x)


def q8_1_offset(w: TensorInfo, d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """llama.cpp's Q4_1/Q5_1 term ``m_w * s_a``, minus the same term on the rounded activation.

    A Q4_1/Q5_1 weight block is ``d_w * q_w + m_w`` (bytes: d fp16 | m fp16 | ...).
    llama.cpp adds ``m_w * s_a`` with ``s_a = fp16(d_a * sum(q_a))`` (d_a before its fp16
    rounding); the float product of the rounded activation adds ``m_w * fp16(d_a) * sum(q_a)``.

    d: f32[n, nb];  q: int32[n, nb, 32]  ->  f32[n, m]
    """
    m_rows, k = w.shape
    blocks = np.asarray(w.raw).reshape(m_rows, k // 32, -1)  # [m, nb, block_bytes]
    m_w = np.ascontiguousarray(blocks[:, :, 2:4]).view(np.float16)[..., 0].astype(np.float64)  # [m, nb]
    q_sum = q.sum(axis=-1).astype(np.float32)  # [n, nb]
    s_llamacpp = f16_round_trip(d * q_sum).astype(np.float64)  # [n, nb]
    s_float = f16_round_trip(d).astype(np.float64) * q_sum  # [n, nb]
    return ((s_llamacpp - s_float) @ m_w.T).astype(np.float32)  # [n, nb] @ [nb, m] -> [n, m]


def linear(x: np.ndarray, w: TensorInfo) -> np.ndarray:
    """x f32[n, k] @ W.T -> f32[n, m], with x rounded as llama.cpp rounds it for W's type."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if w.ggml_type in Q8_1_ACTIVATIONS:
        rounded, d, q = round_q8_0(x)
        return reference.linear(rounded, w) + q8_1_offset(w, d, q)
    return reference.linear(round_activations(x, w.ggml_type), w)


# --------------------------------------------------------------------------- 2-6. the other ops


def attention(q, k_cache, v_cache, positions, scale: float, window: int | None = None) -> np.ndarray:
    """``reference.attention`` with the F16 cache, fp16 q and fp16 probabilities (rules 2, 3).

    q: f32[n, heads, hd]; k_cache, v_cache: f32[n_ctx, kv_heads, hd(_v)] -> f32[n, heads, hd_v]
    """
    n_ctx, n_kv_heads, _ = k_cache.shape
    group = q.shape[1] // n_kv_heads
    visible = reference.visible_keys(positions, n_ctx, window)  # [n, n_ctx]

    k = np.repeat(f16_round_trip(k_cache), group, axis=1)  # [n_ctx, heads, hd]
    v = np.repeat(f16_round_trip(v_cache), group, axis=1)  # [n_ctx, heads, hd_v]
    scores = np.einsum("nhd,chd->hnc", f16_round_trip(q), k) * np.float32(scale)  # [heads, n, n_ctx]
    scores = np.where(visible[None], scores, np.float32(-np.inf))
    probs = f16_round_trip(softmax(scores, axis=-1))  # [heads, n, n_ctx]
    return np.einsum("hnc,chd->nhd", probs, v).astype(np.float32)  # [n, heads, hd_v]


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU through ggml's fp16 table (rule 4).  Any shape -> same shape."""
    x = np.asarray(x, dtype=np.float32)
    from_table = f16_round_trip(reference.gelu_tanh(f16_round_trip(x)))
    return np.where(x <= -10, np.float32(0), np.where(x >= 10, x, from_table)).astype(np.float32)


def rope_angles(positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """ggml's angles for plain RoPE (rule 5): a running float32 product per position.

    inv_freq[i] = freq_scale * theta_scale ** i (plain or linearly scaled RoPE).
    positions: int[n] -> f32[n, r/2]
    """
    inv_freq = np.asarray(inv_freq, dtype=np.float32)
    freq_scale = inv_freq[0]
    theta_scale = np.float32(inv_freq[1] / inv_freq[0])
    theta = positions.astype(np.float32)  # [n]
    angles = np.empty((len(positions), len(inv_freq)), np.float32)  # [n, r/2]
    for i in range(len(inv_freq)):
        angles[:, i] = theta * freq_scale
        theta = theta * theta_scale
    return angles


def rope(x, positions, inv_freq, neox: bool, mscale: float = 1.0) -> np.ndarray:
    """``reference.rope`` turned by ``rope_angles``: one position at a time, each with
    "unit position" 1 and its own row of angles as the frequencies.  [n, heads, hd] -> same"""
    angles = rope_angles(np.asarray(positions), inv_freq)  # [n, r/2]
    one = np.ones(1, np.int64)
    return np.concatenate([reference.rope(x[i : i + 1], one, angles[i], neox, mscale) for i in range(len(x))])


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm in ggml's order (rule 6).  f32[..., d] -> f32[..., d]"""
    sum_squares = (x * x).astype(np.float64).sum(axis=-1, keepdims=True)  # [..., 1]
    mean = (sum_squares / x.shape[-1]).astype(np.float32)
    scale = np.float32(1) / np.sqrt(mean + np.float32(eps))
    return (x * scale) * weight


LLAMACPP_ROUNDING = replace(
    NUMPY_BACKEND,
    name="llamacpp-rounding",
    linear=linear,
    rms_norm=rms_norm,
    rope=rope,
    attention=attention,
    gelu_tanh=gelu_tanh,
)


# --------------------------------------------------------------------------- the check


@dataclass
class OpCheck:
    """One op of one layer, fed llama.cpp's own input tensor(s)."""

    op: str
    rounding_error: float  # max |ours - llama.cpp| / max |llama.cpp|, with the rounding above
    float32_error: float  # the same for refllm's float32 reference op


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    theirs = np.asarray(theirs, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - theirs.reshape(np.shape(ours))).max() / np.abs(theirs).max())


def _check(op: str, run, inputs: tuple, expected: np.ndarray, rounding: Backend) -> OpCheck:
    return OpCheck(
        op,
        relative_error(run(rounding, *inputs), expected),
        relative_error(run(NUMPY_BACKEND, *inputs), expected),
    )


def check_layer(model, tensors: dict[str, np.ndarray], layer: int) -> list[OpCheck]:
    """Each op of ``layer`` on llama.cpp's inputs, against llama.cpp's outputs.

    model: a ``refllm.load``-ed Model (llama or gemma3 family)
    tensors: llama.cpp's intermediate tensors of ONE prompt evaluated from an empty
        cache, named as llama.cpp's graph names them (``attn_norm-0``, ``Qcur-0``, ...;
        see tools/capture_llamacpp_tensors.py)
    """
    cfg, w = model.config, model.transformer.weights
    lw = w.layers[layer]
    gemma = cfg.architecture == "gemma3"
    t = {name: np.asarray(a, dtype=np.float32) for name, a in tensors.items()}
    n = t[f"attn_norm-{layer}"].reshape(-1, cfg.n_embd).shape[0]
    positions = np.arange(n)
    flat = lambda name: t[name].reshape(n, -1)  # noqa: E731  [n, features]
    heads = lambda name, h: t[name].reshape(n, h, -1)  # noqa: E731  [n, h, hd]
    inp = t["inp_scaled" if gemma else "embd"] if layer == 0 else t[f"l_out-{layer - 1}"]
    inp = inp.reshape(n, -1)
    if gemma:
        sliding = cfg.is_sliding(layer)
        inv_freq, mscale = (w.inv_freq_local, 1.0) if sliding else (w.inv_freq_global, w.mscale_global)
    else:
        inv_freq, mscale = w.inv_freq, w.rope_mscale

    checks = [
        _check("attn_norm", lambda o, x: o.rms_norm(x, lw.attn_norm, cfg.rms_norm_eps), (inp,), flat(f"attn_norm-{layer}"), LLAMACPP_ROUNDING),
    ]
    h = flat(f"attn_norm-{layer}")
    for name, weight in (("Qcur", lw.wq), ("Kcur", lw.wk), ("Vcur", lw.wv)):
        checks.append(_check(f"{name} = linear", lambda o, x, wt=weight: o.linear(x, wt), (h,), flat(f"{name}-{layer}"), LLAMACPP_ROUNDING))
    q_in, k_in = heads(f"Qcur-{layer}", cfg.n_heads), heads(f"Kcur-{layer}", cfg.n_kv_heads)
    if gemma:  # QK-norm before RoPE
        checks.append(_check("Qcur_normed", lambda o, x: o.rms_norm(x, lw.q_norm, cfg.rms_norm_eps), (q_in,), t[f"Qcur_normed-{layer}"], LLAMACPP_ROUNDING))
        q_in, k_in = heads(f"Qcur_normed-{layer}", cfg.n_heads), heads(f"Kcur_normed-{layer}", cfg.n_kv_heads)
    rotate = lambda o, x: o.rope(x, positions, inv_freq, cfg.rope_neox, mscale)  # noqa: E731
    checks.append(_check("Qcur rope", rotate, (q_in,), t[f"Qcur-{layer}#2"], LLAMACPP_ROUNDING))
    checks.append(_check("Kcur rope", rotate, (k_in,), t[f"Kcur-{layer}#2"], LLAMACPP_ROUNDING))
    q, k = heads(f"Qcur-{layer}#2", cfg.n_heads), heads(f"Kcur-{layer}#2", cfg.n_kv_heads)
    v = heads(f"Vcur-{layer}", cfg.n_kv_heads)
    window = cfg.sliding_window if gemma and sliding else None
    checks.append(_check("attention", lambda o, a, b, c: o.attention(a, b, c, positions, cfg.attention_scale, window),
                         (q, k, v), flat(f"kqv_out-{layer}"), LLAMACPP_ROUNDING))
    att = flat(f"kqv_out-{layer}")
    ffn_in = flat(f"ffn_norm-{layer}")
    gate, up = flat(f"ffn_gate-{layer}"), flat(f"ffn_up-{layer}")
    if gemma:  # the projection has no name in llama.cpp's graph: check it with its post-norm
        checks.append(_check("attn_output + post-norm", lambda o, x: o.rms_norm(o.linear(x, lw.wo), lw.post_attention_norm, cfg.rms_norm_eps),
                             (att,), flat(f"attn_post_norm-{layer}"), LLAMACPP_ROUNDING))
    else:
        checks.append(_check("attn_output = linear", lambda o, x: o.linear(x, lw.wo), (att,), flat(f"attn_out-{layer}"), LLAMACPP_ROUNDING))
    checks.append(_check("ffn_gate = linear", lambda o, x: o.linear(x, lw.w_gate), (ffn_in,), gate, LLAMACPP_ROUNDING))
    checks.append(_check("ffn_up = linear", lambda o, x: o.linear(x, lw.w_up), (ffn_in,), up, LLAMACPP_ROUNDING))
    if gemma:
        checks.append(_check("ffn_geglu", lambda o, a, b: o.gelu_tanh(a) * b, (gate, up), flat(f"ffn_geglu-{layer}"), LLAMACPP_ROUNDING))
        act = flat(f"ffn_geglu-{layer}")
    else:
        checks.append(_check("ffn_swiglu", lambda o, a, b: o.silu(a) * b, (gate, up), flat(f"ffn_swiglu-{layer}"), LLAMACPP_ROUNDING))
        act = flat(f"ffn_swiglu-{layer}")
    checks.append(_check("ffn_down = linear", lambda o, x: o.linear(x, lw.w_down), (act,), flat(f"ffn_out-{layer}"), LLAMACPP_ROUNDING))
    return checks


def check_output_head(model, tensors: dict[str, np.ndarray]) -> OpCheck:
    """The output head on llama.cpp's final-normed hidden state of the last position."""
    hidden = np.asarray(tensors["result_norm"], dtype=np.float32).reshape(-1, model.config.n_embd)[-1:]  # [1, d]
    logits = np.asarray(tensors["result_output"], dtype=np.float32).reshape(-1, model.config.n_vocab)[-1:]
    head = model.transformer.weights.output
    return _check("output = linear", lambda o, x: o.linear(x, head), (hidden,), logits, LLAMACPP_ROUNDING)


def needed_tensors(cfg, layers: list[int]) -> list[str]:
    """The llama.cpp graph tensors ``check_layer`` and ``check_output_head`` read."""
    gemma = cfg.architecture == "gemma3"
    names = ["result_norm", "result_output"]
    for layer in layers:
        names.append(("inp_scaled" if gemma else "embd") if layer == 0 else f"l_out-{layer - 1}")
        names += [f"{n}-{layer}" for n in ("attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "ffn_norm", "ffn_gate", "ffn_up", "ffn_out")]
        names += [f"Qcur-{layer}#2", f"Kcur-{layer}#2"]
        if gemma:
            names += [f"Qcur_normed-{layer}", f"Kcur_normed-{layer}", f"attn_post_norm-{layer}", f"ffn_geglu-{layer}"]
        else:
            names += [f"attn_out-{layer}", f"ffn_swiglu-{layer}"]
    return names
