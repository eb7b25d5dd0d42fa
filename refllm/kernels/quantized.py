"""Numba kernels over quantized weights: fused dequantize x matvec, and row dequantization.

For every GGML type there are two top-level kernels, each paired with the
NumPy reference of the same job in ``refllm.quant`` (``DEQUANTIZERS[type]``):

    matvec_<type>(rows, x, y, f16, inner)       y[m] = W[m, k] @ x[k]
    dequantize_<type>(rows, out, f16, inner)    out[n, k] = W[n, k] as float32

``rows`` is the weight's raw bytes as uint8 [n_rows, row_bytes], a view straight
into the GGUF memory map: a row is ``k / block_size`` blocks laid end to end, and
nothing is ever copied to float.  ``matvec`` decodes each block in registers and
multiplies it by the matching 32 (or 256) entries of ``x`` (decode), rows in
parallel (``prange``; the backend picks one thread or all per call).
``dequantize`` serves prefill (a tile of rows, then ``numba_ops.matmul_nt`` for
all prompt tokens) and embedding lookups; it runs on the calling thread with the
GIL released (``nogil``), and the backend's tile threads each dequantize their
own tile at the same time (``numba_backend.run_tasks``).

Four details matter for speed, all measured on this machine (Zen 5, one core,
interleaved A/B runs):

* ``inner``, the trip count of the innermost loop (16 or 32 weights, see
  ``KERNELS``), arrives as a run-time argument, never as a constant or as
  ``block_size // 2`` computed inside.  A loop of a known 16 or 32 iterations gets
  fully unrolled by LLVM, which then vectorises the *outer* loop over blocks
  with slow gathers; with an opaque bound the inner loop is the vectorised one
  (Q8_0 matvec: 6 -> 34 GFLOP/s; Q4_1 with ``block_size // 2``: 4.7, with
  ``inner``: 17 GFLOP/s).  The matvec loops then say ``range(inner & 16)``: from
  the bits LLVM reads off that the count is 0 or 16, so it emits exactly one
  16-lane pass, with no leftover loops and no per-block branching between 64-,
  16- and 8-lane versions (``min(inner, 16)`` did half of that; ``& 16`` on top:
  Q4_1 +30-40%, Q4_0 +12%, Q2_K/IQ4_XS +20%).  Q4_K/Q5_K count ``inner & 32``
  (two passes); Q8_0 keeps ``min(inner, 32)`` (``& 32`` measured no better).
  The dequantizers keep their plain or ``min`` counts (bounds measured slower
  there).  Integer work stays in narrow lanes: Numba's integers are 64-bit, so
  a value goes through ``np.uint8`` (``_nibbles``) and a bit test through a byte
  (``BYTE_BITS``) where LLVM would otherwise convert 64-bit lanes.
* A vectorised sum ends in a horizontal add of its 16 lanes (about 9
  instructions), once per loop.  So each loop covers as many weights as one
  scale allows to fold in: one Q4_1 block (32), both sub-blocks of a Q4_K chunk
  (64: the two scales multiply inside the loop), all eight groups of half a Q6_K
  block (128; 2x over one loop per group).  A block's offset part (``m * sum(x)``,
  or ``d * sum(x)`` times the constant 8 / 16 / 32) adds into a second
  accumulator, a chain of its own, from ``x``'s run sums computed once per
  matvec (``_sums_of_runs``).  Keeping 16-lane partial sums across blocks in a
  scratch array, or two or four rows per pass sharing the loads of ``x``,
  measured slower or equal (the array round-trips through memory; ``x`` is in L1).
* The weights come from memory, not cache: each quantized matvec prefetches the
  block 4 KiB ahead of the one it decodes (``_prefetch_ahead``; Q4_1 with weights
  not in cache +25-60%, decode ms/token +4-8%).
* ``f16`` is a 65536-entry table, float32 value of every half-float bit pattern
  (llama.cpp keeps the same table): a block scale costs one lookup.

Every kernel is its own top-level ``@njit(cache=True)`` function: variants made by
one factory function share one on-disk cache entry and can silently load each
other's machine code.  The per-block helpers (``_dot_*``, ``_decode_*``) are
inlined into them.

Accumulation is float32 with the activation kept in float32 (no 8-bit
activation quantization as llama.cpp does), so results match the NumPy
reference to float32 rounding.
"""

from __future__ import annotations

import numpy as np

from refllm.kernels.cache import configure_cache_dir

configure_cache_dir()  # before Numba decorates anything: see cache.py

from llvmlite import ir  # noqa: E402
from numba import njit, prange  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

# fastmath without 'nnan'/'ninf': reassociation lets LLVM vectorise the sums,
# while a NaN or inf in the data still comes out as NaN or inf.
FAST = {"reassoc", "contract", "nsz", "arcp"}

# Half-float bit pattern -> float32 value, all 65536 of them (256 KiB).
F16_TO_F32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
F16_TO_F32.flags.writeable = False

# IQ4_NL / IQ4_XS: the 16 non-linear levels a 4-bit index selects.
IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
IQ4_LEVELS.flags.writeable = False

# 1 << (j % 8) for j < 16: bit j of a 16-bit field is bit j % 8 of its byte j // 8, so
# "is it set" is byte & BYTE_BITS[j], all in 8-bit lanes.  (The plain (qh >> j) & 1 is
# a shift by a different amount in every lane, which Numba's 64-bit integers turn
# into 64-bit lanes: Q5_0 matvec +20-30% this way.)
BYTE_BITS = np.array([1 << (j % 8) for j in range(16)], dtype=np.uint8)
BYTE_BITS.flags.writeable = False


@njit(inline="always")
def _f16(row, o, f16):
    """The little-endian half float at byte ``o`` of ``row``, as float32."""
    return f16[np.int32(row[o]) | (np.int32(row[o + 1]) << 8)]


@njit(inline="always")
def _u32(row, o):
    """The little-endian uint32 at byte ``o`` (as int64, so shifts stay exact)."""
    return (
        np.int64(row[o])
        | (np.int64(row[o + 1]) << 8)
        | (np.int64(row[o + 2]) << 16)
        | (np.int64(row[o + 3]) << 24)
    )


@njit(inline="always")
def _nibbles(byte):
    """The low and the high 4 bits of a byte, as float32.

    Going through uint8 tells LLVM that 8 bits suffice, so the vectorised loop works on
    32-bit lanes; Numba's own integer arithmetic is 64-bit, and converting 64-bit lanes
    to float costs twice the instructions (measured: Q4_1 / Q4_K matvec +5-7%).
    """
    return np.float32(np.uint8(byte & 15)), np.float32(np.uint8(byte >> 4))


@njit(inline="always")
def _sums_of_runs(x, run):
    """[k / run] sums of consecutive runs of x: the part of a dot product a block's
    offset (``m`` of Q4_1, ``dmin * min`` of Q4_K) multiplies.  The same for every
    row, so the matvecs with offsets compute it once, before the row loop."""
    sums = np.zeros(x.shape[0] // run, dtype=np.float32)
    for i in range(x.shape[0]):
        sums[i // run] += x[i]
    return sums


# Decode reads every weight once per token, straight from the memory map: tens of MB,
# more than the caches hold.  The hardware prefetcher follows that stream but stays
# too close behind while the core is busy decoding blocks, so each matvec also asks
# for the bytes PREFETCH_AHEAD further on, one request per block (Q4_1 matvec with
# weights not in cache, one core: +25-45%; 2-8 KiB measured alike, 0.5 KiB too short).
PREFETCH_AHEAD = 4096  # bytes


@intrinsic
def _prefetch(typingctx, array, at):
    """Ask the CPU to start loading the cache line of byte ``at`` of a contiguous
    ``array`` (LLVM's llvm.prefetch: a read, kept in all cache levels).  A hint
    only: it never faults, never changes a result."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.gep(data, [args[1]])
        i32 = ir.IntType(32)
        hint_type = ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(builder.module, hint_type, "llvm.prefetch.p0")
        builder.call(prefetch, [address, i32(0), i32(3), i32(1)])  # read, keep in L1, data
        return context.get_dummy_value()

    return types.void(array, at), codegen


@njit(inline="always")
def _prefetch_ahead(rows, r, o, n_bytes):
    """Prefetch the ``n_bytes`` (one block) that lie PREFETCH_AHEAD past byte ``o`` of
    row ``r``: one request per 64-byte cache line.  Rows are contiguous, so this runs
    on into the next rows; clamped to the last byte."""
    at = r * rows.shape[1] + o + PREFETCH_AHEAD
    for line in range(0, n_bytes, 64):
        _prefetch(rows, min(at + line, rows.size - 1))


# =========================================================================== F32
# A "block" is one float: 4 bytes, little-endian IEEE single.


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_f32(rows, x, y, f16, inner):
    """rows: uint8[m, 4k] -> y[m] = W @ x.  Reference: refllm.quant.floats.dequantize_f32."""
    weights = rows.view(np.float32)  # [m, k], same bytes
    k = x.shape[0]
    for r in prange(weights.shape[0]):
        acc = np.float32(0.0)
        for i in range(k):
            acc += weights[r, i] * x[i]
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_f32(rows, out, f16, inner):
    weights = rows.view(np.float32)
    for r in range(weights.shape[0]):
        out[r, :] = weights[r, :]


# =========================================================================== F16
# One half float per element: s eeeee mmmmmmmmmm, converted through the table.


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_f16(rows, x, y, f16, inner):
    """rows: uint8[m, 2k].  Reference: refllm.quant.floats.dequantize_f16."""
    bits = rows.view(np.uint16)  # [m, k]
    k = x.shape[0]
    for r in prange(bits.shape[0]):
        acc = np.float32(0.0)
        for i in range(k):
            acc += f16[bits[r, i]] * x[i]
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_f16(rows, out, f16, inner):
    bits = rows.view(np.uint16)
    for r in range(bits.shape[0]):
        for i in range(bits.shape[1]):
            out[r, i] = f16[bits[r, i]]


# =========================================================================== BF16
# bfloat16 is the top half of a float32: s eeeeeeee mmmmmmm.  Shift left by 16
# and reinterpret.  Numba has no scalar bit-cast, so a row is widened into a
# uint32 scratch row that is then *viewed* as float32.


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_bf16(rows, x, y, f16, inner):
    """rows: uint8[m, 2k].  Reference: refllm.quant.floats.dequantize_bf16."""
    bits = rows.view(np.uint16)  # [m, k]
    m, k = bits.shape
    n_chunks = (m + 63) // 64
    for c in prange(n_chunks):
        wide = np.empty(k, dtype=np.uint32)  # one scratch row per chunk of 64 rows
        values = wide.view(np.float32)
        for r in range(c * 64, min(m, c * 64 + 64)):
            for i in range(k):
                wide[i] = np.uint32(bits[r, i]) << 16
            acc = np.float32(0.0)
            for i in range(k):
                acc += values[i] * x[i]
            y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_bf16(rows, out, f16, inner):
    bits = rows.view(np.uint16)
    wide = out.view(np.uint32)  # write the float32 bit patterns in place
    for r in range(bits.shape[0]):
        for i in range(bits.shape[1]):
            wide[r, i] = np.uint32(bits[r, i]) << 16


# =========================================================================== Q4_0  (18 bytes, 32 weights)
#   | d f16 | qs[16]: byte j = (weight j+16) << 4 | weight j |
#   weight = d * (nibble - 8)


@njit(inline="always", fastmath=FAST)
def _dot_nibbles(row, qs, x, xo, half):
    """sum(nibble * x) over one block's 32 nibbles, which start at byte ``qs`` (Q4_0 and Q4_1
    lay them out alike); the caller applies the block's scale and offset."""
    s = np.float32(0.0)
    for j in range(half & 16):
        low, high = _nibbles(row[qs + j])
        s += low * x[xo + j] + high * x[xo + 16 + j]
    return s


@njit(inline="always")
def _decode_q4_0(row, o, out, e, f16, half):
    d = _f16(row, o, f16)
    for j in range(half):
        low, high = _nibbles(row[o + 2 + j])
        out[e + j] = d * (low - np.float32(8.0))
        out[e + half + j] = d * (high - np.float32(8.0))


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q4_0(rows, x, y, f16, inner):
    """Reference: refllm.quant.legacy.dequantize_q4_0."""
    n_blocks = x.shape[0] // 32
    x_sums = _sums_of_runs(x, 32)  # [n_blocks]
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)  # sum of d * sum(nibble * x)
        offsets = np.float32(0.0)  # sum of d * sum(x)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 18, 18)
            d = _f16(rows[r], b * 18, f16)
            acc += d * _dot_nibbles(rows[r], b * 18 + 2, x, b * 32, inner)
            offsets += d * x_sums[b]
        y[r] = acc - np.float32(8.0) * offsets  # sum((q - 8) x) = sum(q x) - 8 sum(x)


@njit(cache=True, nogil=True)
def dequantize_q4_0(rows, out, f16, inner):
    n_blocks = out.shape[1] // 32
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q4_0(rows[r], b * 18, out[r], b * 32, f16, inner)


# =========================================================================== Q4_1  (20 bytes, 32 weights)
#   | d f16 | m f16 | qs[16] (nibbles as Q4_0) |
#   weight = d * nibble + m      so  dot = d * sum(nibble * x) + m * sum(x)


@njit(inline="always")
def _decode_q4_1(row, o, out, e, f16, half):
    d = _f16(row, o, f16)
    m = _f16(row, o + 2, f16)
    for j in range(half):
        low, high = _nibbles(row[o + 4 + j])
        out[e + j] = d * low + m
        out[e + half + j] = d * high + m


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q4_1(rows, x, y, f16, inner):
    """Reference: refllm.quant.legacy.dequantize_q4_1."""
    n_blocks = x.shape[0] // 32
    x_sums = _sums_of_runs(x, 32)  # [n_blocks]
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)  # sum of d * sum(nibble * x)
        offsets = np.float32(0.0)  # sum of m * sum(x): a second, independent chain of adds
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 20, 20)
            acc += _f16(rows[r], b * 20, f16) * _dot_nibbles(rows[r], b * 20 + 4, x, b * 32, inner)
            offsets += _f16(rows[r], b * 20 + 2, f16) * x_sums[b]
        y[r] = acc + offsets


@njit(cache=True, nogil=True)
def dequantize_q4_1(rows, out, f16, inner):
    n_blocks = out.shape[1] // 32
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q4_1(rows[r], b * 20, out[r], b * 32, f16, inner)


# =========================================================================== Q5_0  (22 bytes, 32 weights)
#   | d f16 | qh u32: bit i = 5th bit of weight i | qs[16] (low nibbles as Q4_0) |
#   weight = d * ((nibble | high_bit << 4) - 16)


@njit(inline="always", fastmath=FAST)
def _dot_5_bits(row, qh, x, xo, byte_bits, half):
    """sum(q * x) over one block's 32 5-bit quants, q = nibble + 16 * 5th bit (0..31): the
    4 bytes of 5th bits start at byte ``qh`` and the 16 bytes of nibbles follow them (Q5_0
    and Q5_1 lay them out alike); the caller applies the block's scale and offset."""
    qh0, qh1, qh2, qh3 = row[qh], row[qh + 1], row[qh + 2], row[qh + 3]  # the 32 5th bits
    s = np.float32(0.0)
    for j in range(half & 16):
        low, high = _nibbles(row[qh + 4 + j])
        if np.uint8((qh0 if j < 8 else qh1) & byte_bits[j]):  # bit j of qh
            low += np.float32(16.0)
        if np.uint8((qh2 if j < 8 else qh3) & byte_bits[j]):  # bit 16 + j
            high += np.float32(16.0)
        s += low * x[xo + j] + high * x[xo + 16 + j]
    return s


@njit(inline="always")
def _decode_q5_0(row, o, out, e, f16, half):
    d = _f16(row, o, f16)
    qh = _u32(row, o + 2)
    for j in range(half):
        byte = np.int64(row[o + 6 + j])
        out[e + j] = d * np.float32(((byte & 15) | (((qh >> j) & 1) << 4)) - 16)
        out[e + half + j] = d * np.float32(((byte >> 4) | (((qh >> (j + half)) & 1) << 4)) - 16)


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q5_0(rows, x, y, f16, inner):
    """Reference: refllm.quant.legacy.dequantize_q5_0."""
    n_blocks = x.shape[0] // 32
    x_sums = _sums_of_runs(x, 32)  # [n_blocks]
    byte_bits = BYTE_BITS
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)  # sum of d * sum(q * x)
        offsets = np.float32(0.0)  # sum of d * sum(x), a second chain of adds
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 22, 22)
            d = _f16(rows[r], b * 22, f16)
            acc += d * _dot_5_bits(rows[r], b * 22 + 2, x, b * 32, byte_bits, inner)
            offsets += d * x_sums[b]
        y[r] = acc - np.float32(16.0) * offsets  # sum((q - 16) x) = sum(q x) - 16 sum(x)


@njit(cache=True, nogil=True)
def dequantize_q5_0(rows, out, f16, inner):
    n_blocks = out.shape[1] // 32
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q5_0(rows[r], b * 22, out[r], b * 32, f16, inner)


# =========================================================================== Q5_1  (24 bytes, 32 weights)
#   | d f16 | m f16 | qh u32 | qs[16] |
#   weight = d * (nibble | high_bit << 4) + m


@njit(inline="always")
def _decode_q5_1(row, o, out, e, f16, half):
    d = _f16(row, o, f16)
    m = _f16(row, o + 2, f16)
    qh = _u32(row, o + 4)
    for j in range(half):
        byte = np.int64(row[o + 8 + j])
        out[e + j] = d * np.float32((byte & 15) | (((qh >> j) & 1) << 4)) + m
        out[e + half + j] = d * np.float32((byte >> 4) | (((qh >> (j + half)) & 1) << 4)) + m


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q5_1(rows, x, y, f16, inner):
    """Reference: refllm.quant.legacy.dequantize_q5_1."""
    n_blocks = x.shape[0] // 32
    x_sums = _sums_of_runs(x, 32)  # [n_blocks]
    byte_bits = BYTE_BITS
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)  # sum of d * sum(q * x)
        offsets = np.float32(0.0)  # sum of m * sum(x)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 24, 24)
            acc += _f16(rows[r], b * 24, f16) * _dot_5_bits(rows[r], b * 24 + 4, x, b * 32, byte_bits, inner)
            offsets += _f16(rows[r], b * 24 + 2, f16) * x_sums[b]
        y[r] = acc + offsets


@njit(cache=True, nogil=True)
def dequantize_q5_1(rows, out, f16, inner):
    n_blocks = out.shape[1] // 32
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q5_1(rows[r], b * 24, out[r], b * 32, f16, inner)


# =========================================================================== Q8_0  (34 bytes, 32 weights)
#   | d f16 | qs int8[32] |      weight = d * q


@njit(inline="always", fastmath=FAST)
def _dot_q8_0(row, o, x, xo, f16, n):
    d = _f16(row, o, f16)
    s = np.float32(0.0)
    for j in range(min(n, 32)):
        s += np.float32(np.int8(row[o + 2 + j])) * x[xo + j]
    return d * s


@njit(inline="always")
def _decode_q8_0(row, o, out, e, f16, n):
    d = _f16(row, o, f16)
    for j in range(min(n, 32)):
        out[e + j] = d * np.float32(np.int8(row[o + 2 + j]))


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q8_0(rows, x, y, f16, inner):
    """Reference: refllm.quant.legacy.dequantize_q8_0."""
    n_blocks = x.shape[0] // 32
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 34, 34)
            acc += _dot_q8_0(rows[r], b * 34, x, b * 32, f16, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_q8_0(rows, out, f16, inner):
    n_blocks = out.shape[1] // 32
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q8_0(rows[r], b * 34, out[r], b * 32, f16, inner)


# =========================================================================== Q2_K  (84 bytes, 256 weights)
#   | scales[16]: (min4 << 4) | scale4 per 16 weights | qs[64] | d f16 | dmin f16 |
#   weight e = 128n + 32j + l  (n < 2, j < 4, l < 32) is bits 2j..2j+1 of qs[32n + l];
#   its group g = e // 16 has weight = d * scale4[g] * q - dmin * min4[g]


@njit(inline="always", fastmath=FAST)
def _dot_q2_k(row, o, x, xo, f16, sixteen):
    d = _f16(row, o + 80, f16)
    dmin = _f16(row, o + 82, f16)
    acc = np.float32(0.0)
    for n in range(2):
        for j in range(4):
            for h in range(2):  # two groups of 16 share these 32 bytes' bit pair
                g = 8 * n + 2 * j + h
                sc = np.int32(row[o + g])
                base = xo + 128 * n + 32 * j + 16 * h
                s = np.float32(0.0)
                sx = np.float32(0.0)
                for l in range(sixteen & 16):
                    q = (np.int32(row[o + 16 + 32 * n + 16 * h + l]) >> (2 * j)) & 3
                    s += np.float32(q) * x[base + l]
                    sx += x[base + l]
                acc += d * np.float32(sc & 15) * s - dmin * np.float32(sc >> 4) * sx
    return acc


@njit(inline="always")
def _decode_q2_k(row, o, out, e, f16, sixteen):
    d = _f16(row, o + 80, f16)
    dmin = _f16(row, o + 82, f16)
    for n in range(2):
        for j in range(4):
            for h in range(2):
                g = 8 * n + 2 * j + h
                sc = np.int32(row[o + g])
                dl = d * np.float32(sc & 15)
                ml = dmin * np.float32(sc >> 4)
                base = e + 128 * n + 32 * j + 16 * h
                for l in range(min(sixteen, 16)):
                    q = (np.int32(row[o + 16 + 32 * n + 16 * h + l]) >> (2 * j)) & 3
                    out[base + l] = dl * np.float32(q) - ml


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q2_k(rows, x, y, f16, inner):
    """Reference: refllm.quant.kquants.dequantize_q2_k."""
    n_blocks = x.shape[0] // 256
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 84, 84)
            acc += _dot_q2_k(rows[r], b * 84, x, b * 256, f16, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_q2_k(rows, out, f16, inner):
    n_blocks = out.shape[1] // 256
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q2_k(rows[r], b * 84, out[r], b * 256, f16, inner)


# =========================================================================== Q3_K  (110 bytes, 256 weights)
#   | hmask[32] | qs[64] | scales[12]: 16 x 6-bit | d f16 |
#   weight e = 128n + 32j + l: low 2 bits = bits 2j.. of qs[32n + l],
#   high bit = bit (4n + j) of hmask[l]; q = low - (0 if high bit set else 4)
#   scale of group g = e // 16 (6 bits, minus 32):
#       low 4 bits = scales[g % 8] >> (4 * (g // 8)),  high 2 bits = scales[8 + g % 4] >> (2 * (g // 4))


@njit(inline="always")
def _q3_k_scale(row, o, g):
    low = (np.int32(row[o + 96 + g % 8]) >> (4 * (g // 8))) & 15
    high = (np.int32(row[o + 104 + g % 4]) >> (2 * (g // 4))) & 3
    return np.float32((low | (high << 4)) - 32)


@njit(inline="always", fastmath=FAST)
def _dot_q3_k(row, o, x, xo, f16, sixteen):
    d = _f16(row, o + 108, f16)
    acc = np.float32(0.0)
    for n in range(2):
        for j in range(4):
            bit = 4 * n + j
            for h in range(2):
                g = 8 * n + 2 * j + h
                base = xo + 128 * n + 32 * j + 16 * h
                s = np.float32(0.0)
                for l in range(sixteen & 16):
                    low = (np.int32(row[o + 32 + 32 * n + 16 * h + l]) >> (2 * j)) & 3
                    high = (np.int32(row[o + 16 * h + l]) >> bit) & 1
                    s += np.float32(low - 4 + 4 * high) * x[base + l]
                acc += d * _q3_k_scale(row, o, g) * s
    return acc


@njit(inline="always")
def _decode_q3_k(row, o, out, e, f16, sixteen):
    d = _f16(row, o + 108, f16)
    for n in range(2):
        for j in range(4):
            bit = 4 * n + j
            for h in range(2):
                g = 8 * n + 2 * j + h
                dl = d * _q3_k_scale(row, o, g)
                base = e + 128 * n + 32 * j + 16 * h
                for l in range(sixteen):
                    low = (np.int32(row[o + 32 + 32 * n + 16 * h + l]) >> (2 * j)) & 3
                    high = (np.int32(row[o + 16 * h + l]) >> bit) & 1
                    out[base + l] = dl * np.float32(low - 4 + 4 * high)


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q3_k(rows, x, y, f16, inner):
    """Reference: refllm.quant.kquants.dequantize_q3_k."""
    n_blocks = x.shape[0] // 256
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 110, 110)
            acc += _dot_q3_k(rows[r], b * 110, x, b * 256, f16, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_q3_k(rows, out, f16, inner):
    n_blocks = out.shape[1] // 256
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q3_k(rows[r], b * 110, out[r], b * 256, f16, inner)


# =========================================================================== Q4_K  (144 bytes, 256 weights)
#   | d f16 | dmin f16 | scales[12]: 8 x (6-bit scale, 6-bit min) | qs[128] |
#   weight e = 64c + 32h + l (c < 4, h < 2, l < 32) is nibble h of qs[32c + l],
#   sub-block j = 2c + h:  weight = d * scale[j] * q - dmin * min[j]
#   scale/min packing (s = scales bytes):
#       j < 4:  scale = s[j] & 63,                          min = s[j + 4] & 63
#       j >= 4: scale = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, min = (s[j + 4] >> 4) | (s[j] >> 6) << 4


@njit(inline="always")
def _k_scale_min(row, o, j):
    """6-bit (scale, min) of sub-block j of a Q4_K / Q5_K block (scales at byte o + 4)."""
    s = o + 4
    if j < 4:
        return np.float32(np.int32(row[s + j]) & 63), np.float32(np.int32(row[s + j + 4]) & 63)
    scale = (np.int32(row[s + j + 4]) & 15) | ((np.int32(row[s + j - 4]) >> 6) << 4)
    minimum = (np.int32(row[s + j + 4]) >> 4) | ((np.int32(row[s + j]) >> 6) << 4)
    return np.float32(scale), np.float32(minimum)


@njit(inline="always", fastmath=FAST)
def _dot_q4_k(row, o, x, xo, x_sums, f16, sub):
    d = _f16(row, o, f16)
    dmin = _f16(row, o + 2, f16)
    acc = np.float32(0.0)  # sum of scale * sum(q * x)
    offsets = np.float32(0.0)  # sum of min * sum(x)
    for c in range(4):
        sc0, m0 = _k_scale_min(row, o, 2 * c)
        sc1, m1 = _k_scale_min(row, o, 2 * c + 1)
        base = xo + 64 * c
        s = np.float32(0.0)  # both sub-blocks in one vector sum: one horizontal add per 64 weights
        for l in range(sub & 32):
            low, high = _nibbles(row[o + 16 + 32 * c + l])
            s += sc0 * low * x[base + l] + sc1 * high * x[base + 32 + l]
        acc += s
        offsets += m0 * x_sums[base // 32] + m1 * x_sums[base // 32 + 1]
    return d * acc - dmin * offsets


@njit(inline="always")
def _decode_q4_k(row, o, out, e, f16, sub):
    d = _f16(row, o, f16)
    dmin = _f16(row, o + 2, f16)
    for c in range(4):
        sc0, m0 = _k_scale_min(row, o, 2 * c)
        sc1, m1 = _k_scale_min(row, o, 2 * c + 1)
        base = e + 64 * c
        for l in range(sub):
            low, high = _nibbles(row[o + 16 + 32 * c + l])
            out[base + l] = d * sc0 * low - dmin * m0
            out[base + sub + l] = d * sc1 * high - dmin * m1


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q4_k(rows, x, y, f16, inner):
    """Reference: refllm.quant.kquants.dequantize_q4_k."""
    n_blocks = x.shape[0] // 256
    x_sums = _sums_of_runs(x, 32)  # [8 * n_blocks], one per sub-block
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 144, 144)
            acc += _dot_q4_k(rows[r], b * 144, x, b * 256, x_sums, f16, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_q4_k(rows, out, f16, inner):
    n_blocks = out.shape[1] // 256
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q4_k(rows[r], b * 144, out[r], b * 256, f16, inner)


# =========================================================================== Q5_K  (176 bytes, 256 weights)
#   | d f16 | dmin f16 | scales[12] (as Q4_K) | qh[32] | qs[128] |
#   weight e = 64c + 32h + l: low 4 bits = nibble h of qs[32c + l],
#   5th bit = bit (2c + h) of qh[l];  weight = d * scale[j] * q - dmin * min[j], j = 2c + h


@njit(inline="always", fastmath=FAST)
def _dot_q5_k(row, o, x, xo, x_sums, f16, sub):
    d = _f16(row, o, f16)
    dmin = _f16(row, o + 2, f16)
    acc = np.float32(0.0)  # sum of scale * sum(q * x)
    offsets = np.float32(0.0)  # sum of min * sum(x)
    for c in range(4):
        sc0, m0 = _k_scale_min(row, o, 2 * c)
        sc1, m1 = _k_scale_min(row, o, 2 * c + 1)
        base = xo + 64 * c
        s = np.float32(0.0)
        for l in range(sub & 32):
            byte = np.int32(row[o + 48 + 32 * c + l])
            high = np.int32(row[o + 16 + l])
            q0 = (byte & 15) | (((high >> (2 * c)) & 1) << 4)
            q1 = (byte >> 4) | (((high >> (2 * c + 1)) & 1) << 4)
            s += sc0 * np.float32(q0) * x[base + l] + sc1 * np.float32(q1) * x[base + 32 + l]
        acc += s
        offsets += m0 * x_sums[base // 32] + m1 * x_sums[base // 32 + 1]
    return d * acc - dmin * offsets


@njit(inline="always")
def _decode_q5_k(row, o, out, e, f16, sub):
    d = _f16(row, o, f16)
    dmin = _f16(row, o + 2, f16)
    for c in range(4):
        sc0, m0 = _k_scale_min(row, o, 2 * c)
        sc1, m1 = _k_scale_min(row, o, 2 * c + 1)
        base = e + 64 * c
        for l in range(sub):
            byte = np.int32(row[o + 48 + 32 * c + l])
            high = np.int32(row[o + 16 + l])
            q0 = (byte & 15) | (((high >> (2 * c)) & 1) << 4)
            q1 = (byte >> 4) | (((high >> (2 * c + 1)) & 1) << 4)
            out[base + l] = d * sc0 * np.float32(q0) - dmin * m0
            out[base + sub + l] = d * sc1 * np.float32(q1) - dmin * m1


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q5_k(rows, x, y, f16, inner):
    """Reference: refllm.quant.kquants.dequantize_q5_k."""
    n_blocks = x.shape[0] // 256
    x_sums = _sums_of_runs(x, 32)  # [8 * n_blocks], one per sub-block
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 176, 176)
            acc += _dot_q5_k(rows[r], b * 176, x, b * 256, x_sums, f16, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_q5_k(rows, out, f16, inner):
    n_blocks = out.shape[1] // 256
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q5_k(rows[r], b * 176, out[r], b * 256, f16, inner)


# =========================================================================== Q6_K  (210 bytes, 256 weights)
#   | ql[128] | qh[64] | scales int8[16] | d f16 |
#   weight e = 128n + 32j + l (n < 2, j < 4, l < 32):
#       low 4 bits  = nibble (j // 2) of ql[64n + 32(j % 2) + l]
#       high 2 bits = bits 2j..2j+1 of qh[32n + l]
#   weight = d * scales[e // 16] * (q - 32)


@njit(inline="always")
def _q6(low_byte, low_shift, high_byte, high_shift):
    """The unsigned 6-bit quant (0..63) from its low 4 and high 2 bits, as float32
    (through uint8, as in ``_nibbles``)."""
    return np.float32(np.uint8(((low_byte >> low_shift) & 15) | (((high_byte >> high_shift) & 3) << 4)))


@njit(inline="always", fastmath=FAST)
def _dot_q6_k(row, o, x, xo, x_sums, f16, sixteen):
    """One block.  Per half n, one 16-lane loop covers all 8 groups of 16 (l < 16 below;
    group 2j + h reads ql/qh at l + 16h), so the vector sum is reduced once per 128 weights."""
    d = _f16(row, o + 208, f16)
    acc = np.float32(0.0)  # sum of scale * sum(q * x), q = 0..63
    offsets = np.float32(0.0)  # sum of scale * sum(x): sum((q - 32) x) = sum(q x) - 32 sum(x)
    for n in range(2):
        scales = o + 192 + 8 * n
        sc0 = np.float32(np.int8(row[scales]))
        sc1 = np.float32(np.int8(row[scales + 1]))
        sc2 = np.float32(np.int8(row[scales + 2]))
        sc3 = np.float32(np.int8(row[scales + 3]))
        sc4 = np.float32(np.int8(row[scales + 4]))
        sc5 = np.float32(np.int8(row[scales + 5]))
        sc6 = np.float32(np.int8(row[scales + 6]))
        sc7 = np.float32(np.int8(row[scales + 7]))
        ql = o + 64 * n
        qh = o + 128 + 32 * n
        base = xo + 128 * n
        s = np.float32(0.0)
        for l in range(sixteen & 16):
            #          scale   low nibble: byte, shift      high bits: byte, shift     x
            s += (sc0 * _q6(row[ql + l], 0, row[qh + l], 0) * x[base + l]  # j=0
                  + sc1 * _q6(row[ql + 16 + l], 0, row[qh + 16 + l], 0) * x[base + 16 + l]
                  + sc2 * _q6(row[ql + 32 + l], 0, row[qh + l], 2) * x[base + 32 + l]  # j=1
                  + sc3 * _q6(row[ql + 48 + l], 0, row[qh + 16 + l], 2) * x[base + 48 + l]
                  + sc4 * _q6(row[ql + l], 4, row[qh + l], 4) * x[base + 64 + l]  # j=2
                  + sc5 * _q6(row[ql + 16 + l], 4, row[qh + 16 + l], 4) * x[base + 80 + l]
                  + sc6 * _q6(row[ql + 32 + l], 4, row[qh + l], 6) * x[base + 96 + l]  # j=3
                  + sc7 * _q6(row[ql + 48 + l], 4, row[qh + 16 + l], 6) * x[base + 112 + l])
        acc += s
        g = base // 16  # the group sums of x this half covers
        offsets += (sc0 * x_sums[g] + sc1 * x_sums[g + 1] + sc2 * x_sums[g + 2] + sc3 * x_sums[g + 3]
                    + sc4 * x_sums[g + 4] + sc5 * x_sums[g + 5] + sc6 * x_sums[g + 6] + sc7 * x_sums[g + 7])
    return d * (acc - np.float32(32.0) * offsets)


@njit(inline="always")
def _decode_q6_k(row, o, out, e, f16, sixteen):
    d = _f16(row, o + 208, f16)
    for n in range(2):
        for j in range(4):
            for h in range(2):
                g = 8 * n + 2 * j + h
                dl = d * np.float32(np.int8(row[o + 192 + g]))
                base = e + 128 * n + 32 * j + 16 * h
                low_at = o + 64 * n + 32 * (j % 2) + 16 * h
                high_at = o + 128 + 32 * n + 16 * h
                for l in range(min(sixteen, 16)):
                    out[base + l] = dl * (_q6(row[low_at + l], 4 * (j // 2), row[high_at + l], 2 * j) - np.float32(32.0))


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_q6_k(rows, x, y, f16, inner):
    """Reference: refllm.quant.kquants.dequantize_q6_k."""
    n_blocks = x.shape[0] // 256
    x_sums = _sums_of_runs(x, 16)  # [16 * n_blocks], one per group of 16
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 210, 210)
            acc += _dot_q6_k(rows[r], b * 210, x, b * 256, x_sums, f16, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_q6_k(rows, out, f16, inner):
    n_blocks = out.shape[1] // 256
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_q6_k(rows[r], b * 210, out[r], b * 256, f16, inner)


# =========================================================================== IQ4_NL  (18 bytes, 32 weights)
#   | d f16 | qs[16] (nibbles as Q4_0) |     weight = d * IQ4_LEVELS[nibble]


@njit(inline="always", fastmath=FAST)
def _dot_iq4_nl(row, o, x, xo, f16, levels, half):
    d = _f16(row, o, f16)
    s = np.float32(0.0)
    for j in range(half & 16):
        byte = np.int32(row[o + 2 + j])
        s += levels[byte & 15] * x[xo + j] + levels[byte >> 4] * x[xo + 16 + j]
    return d * s


@njit(inline="always")
def _decode_iq4_nl(row, o, out, e, f16, levels, half):
    d = _f16(row, o, f16)
    for j in range(min(half, 16)):
        byte = np.int32(row[o + 2 + j])
        out[e + j] = d * levels[byte & 15]
        out[e + half + j] = d * levels[byte >> 4]


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_iq4_nl(rows, x, y, f16, inner):
    """Reference: gguf.quants.IQ4_NL (refllm.quant when it lands)."""
    levels = IQ4_LEVELS
    n_blocks = x.shape[0] // 32
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 18, 18)
            acc += _dot_iq4_nl(rows[r], b * 18, x, b * 32, f16, levels, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_iq4_nl(rows, out, f16, inner):
    levels = IQ4_LEVELS
    n_blocks = out.shape[1] // 32
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_iq4_nl(rows[r], b * 18, out[r], b * 32, f16, levels, inner)


# =========================================================================== IQ4_XS  (136 bytes, 256 weights)
#   | d f16 | scales_h u16 | scales_l[4] | qs[128] |
#   sub-block j < 8 of 32 weights: 6-bit scale
#       ls = ((scales_l[j // 2] >> 4(j % 2)) & 15) | ((scales_h >> 2j) & 3) << 4
#   its 16 bytes qs[16j ..]: low nibbles -> weights 32j + l, high -> 32j + 16 + l
#   weight = d * (ls - 32) * IQ4_LEVELS[nibble]


@njit(inline="always")
def _iq4_xs_scale(row, o, j):
    scales_h = np.int32(row[o + 2]) | (np.int32(row[o + 3]) << 8)
    low = (np.int32(row[o + 4 + j // 2]) >> (4 * (j % 2))) & 15
    high = (scales_h >> (2 * j)) & 3
    return np.float32((low | (high << 4)) - 32)


@njit(inline="always", fastmath=FAST)
def _dot_iq4_xs(row, o, x, xo, f16, levels, sixteen):
    d = _f16(row, o, f16)
    acc = np.float32(0.0)
    for j in range(8):
        base = xo + 32 * j
        s = np.float32(0.0)
        for l in range(sixteen & 16):
            byte = np.int32(row[o + 8 + 16 * j + l])
            s += levels[byte & 15] * x[base + l] + levels[byte >> 4] * x[base + 16 + l]
        acc += d * _iq4_xs_scale(row, o, j) * s
    return acc


@njit(inline="always")
def _decode_iq4_xs(row, o, out, e, f16, levels, sixteen):
    d = _f16(row, o, f16)
    for j in range(8):
        dl = d * _iq4_xs_scale(row, o, j)
        base = e + 32 * j
        for l in range(min(sixteen, 16)):
            byte = np.int32(row[o + 8 + 16 * j + l])
            out[base + l] = dl * levels[byte & 15]
            out[base + sixteen + l] = dl * levels[byte >> 4]


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def matvec_iq4_xs(rows, x, y, f16, inner):
    """Reference: gguf.quants.IQ4_XS (refllm.quant when it lands)."""
    levels = IQ4_LEVELS
    n_blocks = x.shape[0] // 256
    for r in prange(rows.shape[0]):
        acc = np.float32(0.0)
        for b in range(n_blocks):
            _prefetch_ahead(rows, r, b * 136, 136)
            acc += _dot_iq4_xs(rows[r], b * 136, x, b * 256, f16, levels, inner)
        y[r] = acc


@njit(cache=True, nogil=True)
def dequantize_iq4_xs(rows, out, f16, inner):
    levels = IQ4_LEVELS
    n_blocks = out.shape[1] // 256
    for r in range(rows.shape[0]):
        for b in range(n_blocks):
            _decode_iq4_xs(rows[r], b * 136, out[r], b * 256, f16, levels, inner)


# =========================================================================== the table

# GGML type name -> (matvec kernel, dequantize kernel, inner: the innermost loop's length)
KERNELS = {
    "F32": (matvec_f32, dequantize_f32, 0),  # unused: one row is one loop
    "F16": (matvec_f16, dequantize_f16, 0),
    "BF16": (matvec_bf16, dequantize_bf16, 0),
    "Q4_0": (matvec_q4_0, dequantize_q4_0, 16),  # 16 bytes -> low and high nibbles
    "Q4_1": (matvec_q4_1, dequantize_q4_1, 16),
    "Q5_0": (matvec_q5_0, dequantize_q5_0, 16),
    "Q5_1": (matvec_q5_1, dequantize_q5_1, 16),
    "Q8_0": (matvec_q8_0, dequantize_q8_0, 32),  # 32 int8
    "Q2_K": (matvec_q2_k, dequantize_q2_k, 16),  # 16 weights per scale
    "Q3_K": (matvec_q3_k, dequantize_q3_k, 16),
    "Q4_K": (matvec_q4_k, dequantize_q4_k, 32),  # 32 weights per scale
    "Q5_K": (matvec_q5_k, dequantize_q5_k, 32),
    "Q6_K": (matvec_q6_k, dequantize_q6_k, 16),
    "IQ4_NL": (matvec_iq4_nl, dequantize_iq4_nl, 16),
    "IQ4_XS": (matvec_iq4_xs, dequantize_iq4_xs, 16),
}
