"""CUDA kernels (``numba.cuda``) for the transformer's hot paths, reading raw GGML blocks.

Each kernel here has a NumPy reference elsewhere in refllm (``refllm.quant`` for the
block layouts, ``refllm.kernels.reference`` for the ops); tests hold one against the
other, on a real GPU or in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

Quantized weights stay in their GGML layout on the device: a ``uint8`` array holding
the tensor's bytes, rows one after another.  The matrix-vector kernel gives every
output row one thread block of ``WARP`` threads; the threads walk the row in *units*
of 32 weights (a whole Q8_0/Q4_0/... block, or one 32-weight sub-block of a K-quant
super-block), decode their unit into registers, multiply with the activation and
reduce their partial sums in shared memory.

Half floats are decoded from their bits (``half_to_float``), so the kernels need
nothing but byte loads and work the same in the simulator and on a GPU.
"""

from __future__ import annotations

import math
import os

from numba import cuda, float32, int32, uint32

# GGML type ids (gguf.GGMLQuantizationType values), as plain ints for device code.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q4_K, Q5_K, Q6_K, BF16 = 12, 13, 14, 30

# type id -> (weights per block, bytes per block)
BLOCK_LAYOUT = {
    F32: (1, 4), F16: (1, 2), BF16: (1, 2),
    Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34),
    Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210),
}
SUPPORTED_TYPES = tuple(BLOCK_LAYOUT)

UNIT = 32  # weights decoded at once by one thread

# Launch sizes.  Every kernel walks its work with grid-stride loops, so it gives the same
# result for any grid: a GPU launches one thread block per output row (or per 1-D chunk),
# up to MAX_BLOCKS.  The simulator runs every thread as a Python thread and every block one
# after another, so there the same code runs with fewer, smaller blocks.
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
WARP = 4 if SIMULATOR else 32  # threads per row in matmul, RMSNorm and attention (a warp on a GPU)
THREADS = 8 if SIMULATOR else 128  # threads per block of the elementwise kernels
MAX_BLOCKS = 2 if SIMULATOR else 65535  # blocks per grid dimension (CUDA allows 65535 in y and z)


def unit_layout(type_id: int) -> tuple[int, int]:
    """(bytes per unit of 32 weights or per block, units per block) used to address a unit.

    For float types a unit is 32 consecutive values (no block structure);
    legacy quants: one unit = one 32-weight block; K-quants: 8 units per 256-weight block.
    """
    block_size, type_size = BLOCK_LAYOUT[type_id]
    if block_size == 1:
        return UNIT * type_size, 1
    return type_size, block_size // UNIT


# --------------------------------------------------------------------------- scalar decoding


@cuda.jit(device=True, inline=True)
def u16(raw, i):
    """Little-endian uint16 at byte i."""
    return int32(raw[i]) | (int32(raw[i + 1]) << 8)


@cuda.jit(device=True)
def half_to_float(bits):
    """IEEE binary16 bits -> float32:  s eeeee mmmmmmmmmm."""
    sign = -1.0 if (bits >> 15) & 1 else 1.0
    exponent = (bits >> 10) & 0x1F
    mantissa = bits & 0x3FF
    if exponent == 0:  # subnormal: 0.m x 2^-14
        return float32(sign * mantissa * 5.960464477539063e-08)  # 2^-24
    if exponent == 31:
        return float32(sign * math.inf) if mantissa == 0 else float32(math.nan)
    return float32(sign * (1.0 + mantissa / 1024.0) * math.pow(2.0, exponent - 15))


@cuda.jit(device=True)
def bf16_to_float(bits):
    """bfloat16 bits -> float32:  s eeeeeeee mmmmmmm (the top half of a float32)."""
    sign = -1.0 if (bits >> 15) & 1 else 1.0
    exponent = (bits >> 7) & 0xFF
    mantissa = bits & 0x7F
    if exponent == 0:
        return float32(sign * mantissa * math.pow(2.0, -133))  # 0.m x 2^-126
    if exponent == 255:
        return float32(sign * math.inf) if mantissa == 0 else float32(math.nan)
    return float32(sign * (1.0 + mantissa / 128.0) * math.pow(2.0, exponent - 127))


@cuda.jit(device=True)
def f32_from_bytes(raw, i):
    """Little-endian IEEE binary32 at byte i."""
    bits = uint32(raw[i]) | (uint32(raw[i + 1]) << 8) | (uint32(raw[i + 2]) << 16) | (uint32(raw[i + 3]) << 24)
    sign = -1.0 if (bits >> 31) & 1 else 1.0
    exponent = int32((bits >> 23) & 0xFF)
    mantissa = int32(bits & 0x7FFFFF)
    if exponent == 0:
        return float32(sign * mantissa * math.pow(2.0, -149))
    if exponent == 255:
        return float32(sign * math.inf) if mantissa == 0 else float32(math.nan)
    return float32(sign * (1.0 + mantissa / 8388608.0) * math.pow(2.0, exponent - 127))


# --------------------------------------------------------------------------- one unit of 32 weights
#
# decode_unit(type_id, raw, start, sub, out) writes 32 weights into `out`:
#   start: byte offset of the block (legacy/K quants) or of the unit (float types)
#   sub:   which 32-weight sub-block of a K-quant super-block (0..7); 0 otherwise


@cuda.jit(device=True)
def decode_legacy(type_id, raw, start, out):
    """Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: one block of 32 weights.

    Q8_0: | d f16 | q int8 x 32 |                         w = d * q
    Q4_0: | d f16 | qs u8 x 16 |                          w = d * (q - 8)
    Q4_1: | d f16 | m f16 | qs u8 x 16 |                  w = d * q + m
    Q5_0: | d f16 | qh u32 | qs u8 x 16 |                 w = d * (q - 16)
    Q5_1: | d f16 | m f16 | qh u32 | qs u8 x 16 |         w = d * q + m
    4-bit q: weight j < 16 is the low nibble of qs[j], weight j + 16 the high nibble;
    5-bit q: bit 4 of weight j is bit j of qh.
    """
    d = half_to_float(u16(raw, start))
    if type_id == Q8_0:
        for j in range(32):
            q = int32(raw[start + 2 + j])
            out[j] = d * float32(q - 256 if q > 127 else q)
        return
    m = float32(0.0)
    qs = start + 2
    if type_id == Q4_1 or type_id == Q5_1:
        m = half_to_float(u16(raw, start + 2))
        qs += 2
    qh = uint32(0)
    if type_id == Q5_0 or type_id == Q5_1:
        qh = uint32(raw[qs]) | (uint32(raw[qs + 1]) << 8) | (uint32(raw[qs + 2]) << 16) | (uint32(raw[qs + 3]) << 24)
        qs += 4
    offset = 8 if type_id == Q4_0 else (16 if type_id == Q5_0 else 0)
    for j in range(16):
        lo = int32(raw[qs + j] & 0x0F)
        hi = int32(raw[qs + j] >> 4)
        if type_id == Q5_0 or type_id == Q5_1:
            lo |= int32((qh >> j) & 1) << 4
            hi |= int32((qh >> (j + 16)) & 1) << 4
        out[j] = d * float32(lo - offset) + m
        out[j + 16] = d * float32(hi - offset) + m


@cuda.jit(device=True)
def k_scale_min(raw, scales, sub):
    """6-bit (scale, min) of sub-block `sub` from the 12 packed bytes of Q4_K/Q5_K.

    bytes 0-3: low 6 bits = scales 0-3, top 2 bits = high bits of scales 4-7
    bytes 4-7: low 6 bits = mins 0-3,   top 2 bits = high bits of mins 4-7
    bytes 8-11: low nibble = low 4 bits of scales 4-7, high nibble = of mins 4-7
    """
    if sub < 4:
        return int32(raw[scales + sub] & 63), int32(raw[scales + sub + 4] & 63)
    sc = int32(raw[scales + sub + 4] & 0x0F) | (int32(raw[scales + sub - 4] >> 6) << 4)
    mn = int32(raw[scales + sub + 4] >> 4) | (int32(raw[scales + sub] >> 6) << 4)
    return sc, mn


@cuda.jit(device=True)
def decode_k(type_id, raw, start, sub, out):
    """Q4_K, Q5_K, Q6_K: 32 weights (sub-block `sub`) of a 256-weight super-block.

    Q4_K: | d f16 | dmin f16 | scales 12 | qs 128 |            w = d*sc*q - dmin*mn
    Q5_K: | d f16 | dmin f16 | scales 12 | qh 32 | qs 128 |    q gets bit `sub` of qh[j]
          qs: 4 chunks of 32 bytes; chunk c holds sub-block 2c (low nibbles) and 2c+1 (high)
    Q6_K: | ql 128 | qh 64 | scales int8 x 16 | d f16 |        w = d * scale * (q - 32)
          weight e: ql nibble (e%128 // 64) of ql[e//128 * 64 + e%64],
                    2 bits  (e%128 // 32) of qh[e//128 * 32 + e%32]; scale e // 16
    """
    if type_id == Q6_K:
        d = half_to_float(u16(raw, start + 208))
        for j in range(32):
            e = sub * 32 + j
            half, r = e // 128, e % 128
            low = int32(raw[start + half * 64 + r % 64] >> (4 * (r // 64))) & 0x0F
            high = int32(raw[start + 128 + half * 32 + r % 32] >> (2 * (r // 32))) & 0x03
            scale = int32(raw[start + 192 + e // 16])
            scale = scale - 256 if scale > 127 else scale
            out[j] = d * float32(scale) * float32((low | (high << 4)) - 32)
        return
    d = half_to_float(u16(raw, start))
    dmin = half_to_float(u16(raw, start + 2))
    sc, mn = k_scale_min(raw, start + 4, sub)
    scale = d * float32(sc)
    offset = dmin * float32(mn)
    qs = start + 16 if type_id == Q4_K else start + 48
    chunk = qs + (sub // 2) * 32
    shift = 4 * (sub % 2)
    for j in range(32):
        q = int32(raw[chunk + j] >> shift) & 0x0F
        if type_id == Q5_K:
            q |= (int32(raw[start + 16 + j] >> sub) & 1) << 4
        out[j] = scale * float32(q) - offset


@cuda.jit(device=True)
def decode_unit(type_id, raw, start, sub, out):
    if type_id == F32:
        for j in range(32):
            out[j] = f32_from_bytes(raw, start + 4 * j)
    elif type_id == F16:
        for j in range(32):
            out[j] = half_to_float(u16(raw, start + 2 * j))
    elif type_id == BF16:
        for j in range(32):
            out[j] = bf16_to_float(u16(raw, start + 2 * j))
    elif type_id == Q4_K or type_id == Q5_K or type_id == Q6_K:
        decode_k(type_id, raw, start, sub, out)
    else:
        decode_legacy(type_id, raw, start, out)


# --------------------------------------------------------------------------- reductions


@cuda.jit(device=True)
def block_sum(partial, lane, value):
    """Sum ``value`` over the WARP threads of this block; every thread gets the total.

    Each thread writes its value to shared memory, waits for the others, and adds up all
    WARP of them (every thread reads the same addresses: a broadcast, no bank conflicts).
    """
    partial[lane] = value
    cuda.syncthreads()
    total = float32(0.0)
    for i in range(WARP):
        total += partial[i]
    cuda.syncthreads()  # everyone has read `partial` before the next block_sum writes it
    return total


# --------------------------------------------------------------------------- matrix kernels


@cuda.jit
def matmul_kernel(type_id, raw, row_bytes, unit_bytes, units_per_block, x, y):
    """y[t, r] = sum_k W[r, k] * x[t, k], W quantized in `raw`.

    raw: uint8[n_rows * row_bytes]; x: float32[n_tokens, k]; y: float32[n_tokens, n_rows].
    grid: (rows, tokens) blocks of WARP threads; block (bx, by) computes y[t, r] for
    r = bx, bx + gridDim.x, ... and t = by, by + gridDim.y, ...
    The WARP threads split the row into units of 32 weights and sum their products.
    """
    lane = cuda.threadIdx.x
    n_units = x.shape[1] // 32
    weights = cuda.local.array(32, float32)
    partial = cuda.shared.array(WARP, float32)
    for token in range(cuda.blockIdx.y, x.shape[0], cuda.gridDim.y):
        for row in range(cuda.blockIdx.x, y.shape[1], cuda.gridDim.x):
            acc = float32(0.0)
            for unit in range(lane, n_units, WARP):
                block, sub = unit // units_per_block, unit % units_per_block
                decode_unit(type_id, raw, row * row_bytes + block * unit_bytes, sub, weights)
                for j in range(32):
                    acc += weights[j] * x[token, unit * 32 + j]
            total = block_sum(partial, lane, acc)
            if lane == 0:
                y[token, row] = total


@cuda.jit
def embedding_kernel(type_id, raw, row_bytes, unit_bytes, units_per_block, ids, out):
    """out[t, :] = dequantized row ids[t] of the table in `raw`.

    grid: (tokens, units) blocks of THREADS threads; one thread decodes one unit of 32 weights.
    """
    n_units = out.shape[1] // 32
    weights = cuda.local.array(32, float32)
    first_unit = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    for token in range(cuda.blockIdx.x, out.shape[0], cuda.gridDim.x):
        for unit in range(first_unit, n_units, cuda.gridDim.y * cuda.blockDim.x):
            block, sub = unit // units_per_block, unit % units_per_block
            decode_unit(type_id, raw, ids[token] * row_bytes + block * unit_bytes, sub, weights)
            for j in range(32):
                out[token, unit * 32 + j] = weights[j]


# --------------------------------------------------------------------------- normalisation


@cuda.jit
def rms_norm_kernel(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight.   grid: rows, blocks of WARP threads."""
    lane = cuda.threadIdx.x
    n = x.shape[1]
    partial = cuda.shared.array(WARP, float32)
    for t in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
        acc = float32(0.0)
        for i in range(lane, n, WARP):
            acc += x[t, i] * x[t, i]
        inv = float32(1.0) / math.sqrt(block_sum(partial, lane, acc) / n + eps)
        for i in range(lane, n, WARP):
            out[t, i] = x[t, i] * inv * weight[i]


# --------------------------------------------------------------------------- elementwise
#
# 1-D kernels over the elements of flat (contiguous, reshaped to 1-D) arrays.


@cuda.jit(device=True)
def gelu_or_silu(g, use_gelu):
    """GELU (tanh approximation) if use_gelu, else SiLU."""
    if use_gelu:
        return 0.5 * g * (1.0 + math.tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)))
    return g / (1.0 + math.exp(-g))


@cuda.jit
def activation_kernel(x, use_gelu, out):
    """out = act(x), act = SiLU or GELU (tanh approximation)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = gelu_or_silu(x[i], use_gelu)


@cuda.jit
def add_kernel(a, b, out):
    """out[i] = a[i] + b[i % b.size]: b of a's size (residual), or of its last axis (bias)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] + b[i % b.size]


@cuda.jit
def multiply_kernel(a, b, out):
    """out[i] = a[i] * b[i % b.size]: b of a's size, or of its last axis."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i % b.size]


@cuda.jit
def fill_kernel(a, value):
    """a[i] = value."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = value


@cuda.jit
def scale_kernel(a, s, out):
    """out[i] = a[i] * s (a scalar)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] * s


# --------------------------------------------------------------------------- rotary embedding and attention


@cuda.jit
def rope_kernel(x, positions, inv_freq, neox, mscale):
    """Rotate pairs of x[t, h, :] in place by angle positions[t] * inv_freq[i].

    x: float32[n_tokens, n_heads, head_dim]; positions: int64[n_tokens];
    inv_freq: float32[n_rot // 2]; dims past n_rot pass through; mscale (YaRN)
    multiplies cos and sin.  normal (GPT-J) style pairs (2i, 2i+1);
    NEOX style pairs (i, i + n_rot/2).  1-D grid over n_tokens * n_heads * n_rot/2 pairs.
    """
    n_tokens, n_heads = x.shape[0], x.shape[1]
    half = inv_freq.shape[0]
    for idx in range(cuda.grid(1), n_tokens * n_heads * half, cuda.gridsize(1)):
        t = idx // (n_heads * half)
        h = (idx // half) % n_heads
        i = idx % half
        angle = float32(positions[t]) * inv_freq[i]
        c, s = math.cos(angle) * mscale, math.sin(angle) * mscale
        a, b = (i, i + half) if neox else (2 * i, 2 * i + 1)
        x0, x1 = x[t, h, a], x[t, h, b]
        x[t, h, a] = x0 * c - x1 * s
        x[t, h, b] = x0 * s + x1 * c


@cuda.jit
def attention_kernel(q, k_cache, v_cache, positions, window, scale, out, scores):
    """Causal softmax attention of q against the KV cache, one thread block per (token, head).

    q: [n_tokens, n_heads, head_dim]; k_cache: [n_ctx, n_kv_heads, head_dim];
    v_cache: [n_ctx, n_kv_heads, hd_v] (slot p holds position p); out: [n_tokens, n_heads, hd_v];
    scores: scratch [n_tokens, n_heads, n_ctx].  Token t sees cache positions
    p <= positions[t], and p > positions[t] - window when window > 0 (sliding window).
    grid: (tokens, heads) blocks of WARP threads, grid-stride over both.
    """
    lane = cuda.threadIdx.x
    n_threads = cuda.blockDim.x
    group = q.shape[1] // k_cache.shape[1]  # query heads per kv head (grouped-query attention)
    head_dim = q.shape[2]
    for t in range(cuda.blockIdx.x, q.shape[0], cuda.gridDim.x):
        for h in range(cuda.blockIdx.y, q.shape[1], cuda.gridDim.y):
            kv_head = h // group
            last = positions[t]
            first = 0
            if window > 0 and last - window + 1 > 0:
                first = last - window + 1
            # 1. scores[p] = q . k[p] * scale   (threads split the positions)
            for p in range(first + lane, last + 1, n_threads):
                dot = float32(0.0)
                for d in range(head_dim):
                    dot += q[t, h, d] * k_cache[p, kv_head, d]
                scores[t, h, p] = dot * scale
            cuda.syncthreads()
            # 2. softmax over first..last (each thread computes the max and sum itself: short rows)
            top = float32(-math.inf)
            for p in range(first, last + 1):
                if scores[t, h, p] > top:
                    top = scores[t, h, p]
            total = float32(0.0)
            for p in range(first, last + 1):
                total += math.exp(scores[t, h, p] - top)
            # 3. out[d] = sum_p softmax[p] * v[p, d]   (threads split the head dimensions)
            for d in range(lane, out.shape[2], n_threads):
                acc = float32(0.0)
                for p in range(first, last + 1):
                    acc += math.exp(scores[t, h, p] - top) * v_cache[p, kv_head, d]
                out[t, h, d] = acc / total
