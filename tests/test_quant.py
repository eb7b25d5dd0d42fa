"""refllm.quant against independent references.

* dequantizers: bit-exact against gguf-py (``gguf.quants.dequantize``) on random
  blocks of every type and several shapes, and against llama.cpp's own C
  ``dequantize_row_*`` (golden/quant/llamacpp.npz, written by tools/golden_quant.py);
* the IQ grids (copied from ggml-common.h) against gguf-py's independent encoding;
* quantizers (every type we quantize): bit-exact against llama.cpp's
  ``quantize_row_*_ref`` (golden: bytes for small inputs, per-chunk SHA-256 for
  256K-value inputs rebuilt by ``reproducible_values``) and, for the types gguf-py
  implements, against ``gguf.quants.quantize``; round-trip errors within llama.cpp's
  test-quantize-fns thresholds and per-block error bounds;
* ``dequantize_rows`` against the full dequantization;
* bad input -> UnsupportedQuantType / QuantDataError / InvalidRequest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from refllm.errors import InvalidRequest, RefllmError, UnsupportedModel
from refllm.gguf.reader import TensorInfo
from refllm.quant import (
    DEQUANTIZERS,
    SUPPORTED_DEQUANT_TYPES,
    SUPPORTED_QUANT_TYPES,
    QuantDataError,
    UnsupportedQuantType,
    dequantize,
    dequantize_rows,
    iquants,
    quantize,
)
from refllm.quant.testing import random_blocks, reproducible_values

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "quant" / "llamacpp.npz"
REQUIRED_DEQUANT = ("F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS "
                    "MXFP4 IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S TQ1_0 TQ2_0").split()  # fmt: skip
REQUIRED_QUANT = "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q6_K".split()
# every block type we quantize; golden/quant/llamacpp.npz holds llama.cpp's output for each
LLAMACPP_QUANT_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
                        T.TQ1_0, T.TQ2_0, T.MXFP4, T.IQ4_NL, T.IQ4_XS, T.NVFP4, T.Q1_0]  # fmt: skip


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float32 arrays, bit for bit (so -0.0 != 0.0 and NaN payloads count)."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def gguf_py_dequantize(raw: np.ndarray, ggml_type: T, shape: tuple[int, ...]) -> np.ndarray:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    byte_shape = (*shape[:-1], shape[-1] // block_size * type_size)
    return gguf.quants.dequantize(raw.reshape(byte_shape), ggml_type).reshape(shape)


# gguf-py 0.19 implements every type we dequantize except Q1_0 (llama.cpp's golden covers it)
GGUF_PY_DEQUANT_TYPES = [t for t in SUPPORTED_DEQUANT_TYPES if t != T.Q1_0]


def test_every_required_type_is_supported():
    assert {t.name for t in SUPPORTED_DEQUANT_TYPES} == set(REQUIRED_DEQUANT) | {"NVFP4", "Q1_0"}
    assert set(REQUIRED_QUANT) <= {t.name for t in SUPPORTED_QUANT_TYPES}
    block_types = {t.name for t in SUPPORTED_QUANT_TYPES} - {"F32", "F16", "BF16"}
    assert block_types == {t.name for t in LLAMACPP_QUANT_TYPES}
    assert set(DEQUANTIZERS) == set(SUPPORTED_DEQUANT_TYPES)


# --------------------------------------------------------------------------- dequantization


@pytest.mark.parametrize("ggml_type", GGUF_PY_DEQUANT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows_and_blocks", [(1, 1), (3, 5), (64, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_dequantize_matches_gguf_py(ggml_type, rows_and_blocks):
    n_rows, blocks_per_row = rows_and_blocks
    block_size, _ = GGML_QUANT_SIZES[ggml_type]
    shape = (n_rows, blocks_per_row * block_size)
    rng = np.random.default_rng([int(ggml_type), n_rows, blocks_per_row])
    raw = random_blocks(ggml_type, n_rows * blocks_per_row, rng).reshape(-1)

    ours = dequantize(raw, ggml_type, shape)

    assert ours.dtype == np.float32 and ours.shape == shape
    assert np.isfinite(ours).all()
    assert same_bits(ours, gguf_py_dequantize(raw, ggml_type, shape))
    # the per-type reference function itself, straight on the blocks
    _, type_size = GGML_QUANT_SIZES[ggml_type]
    assert same_bits(DEQUANTIZERS[ggml_type](raw.reshape(-1, type_size)).reshape(shape), ours)


@pytest.mark.parametrize("ggml_type", GGUF_PY_DEQUANT_TYPES, ids=lambda t: t.name)
def test_dequantize_arbitrary_bytes_like_gguf_py(ggml_type):
    """Fully random bytes (NaN / inf scales included) still decode like gguf-py."""
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    raw = np.random.default_rng(int(ggml_type)).integers(0, 256, 40 * type_size, dtype=np.uint8)
    shape = (40 * block_size,)
    with np.errstate(all="ignore"):
        expected = gguf_py_dequantize(raw, ggml_type, shape)
    ours = dequantize(raw.tobytes(), ggml_type, shape)  # also: from bytes
    both_nan = np.isnan(ours) & np.isnan(expected)
    assert np.array_equal(ours.view(np.uint32)[~both_nan], expected.view(np.uint32)[~both_nan])
    assert np.array_equal(np.isnan(ours), np.isnan(expected))


@pytest.mark.parametrize("ggml_type", [t for t in SUPPORTED_DEQUANT_TYPES if GGML_QUANT_SIZES[t][0] > 1],
                         ids=lambda t: t.name)  # fmt: skip
def test_dequantize_matches_llamacpp(golden, ggml_type):
    blocks = golden[f"dequant_{ggml_type.name}_blocks"]
    expected = golden[f"dequant_{ggml_type.name}_values"]
    assert same_bits(dequantize(blocks, ggml_type, expected.shape), expected)


@pytest.mark.parametrize(
    "ours, gguf_class, width",
    [
        (iquants.IQ2XXS_GRID, gguf.quants.IQ2_XXS, 8),
        (iquants.IQ2XS_GRID, gguf.quants.IQ2_XS, 8),
        (iquants.IQ2S_GRID, gguf.quants.IQ2_S, 8),
        (iquants.IQ3XXS_GRID, gguf.quants.IQ3_XXS, 4),
        (iquants.IQ3S_GRID, gguf.quants.IQ3_S, 4),
        (iquants.IQ1S_GRID, gguf.quants.IQ1_S, 8),
    ],
    ids=["iq2xxs", "iq2xs", "iq2s", "iq3xxs", "iq3s", "iq1s"],
)
def test_iq_grids_match_gguf_py(ours, gguf_class, width):
    gguf_class.init_grid()
    theirs = np.asarray(gguf_class.grid, dtype=np.float32).reshape(-1, width)
    assert ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_sign_table_matches_gguf_py():
    assert bytes(iquants.KSIGNS) == gguf.quants.IQ2_XXS.ksigns
    # every pattern has an even number of minus signs
    assert all(bin(int(v)).count("1") % 2 == 0 for v in iquants.KSIGNS)


# --------------------------------------------------------------------------- dequantize_rows


def make_tensor(ggml_type: T, shape: tuple[int, ...], seed: int = 0) -> TensorInfo:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_blocks = int(np.prod(shape)) // block_size
    raw = random_blocks(ggml_type, n_blocks, np.random.default_rng(seed)).reshape(-1)
    return TensorInfo("test.weight", shape, ggml_type, 0, raw.size, raw)


@pytest.mark.parametrize("ggml_type", [T.F32, T.BF16, T.Q8_0, T.Q4_1, T.Q5_0, T.Q4_K, T.Q6_K, T.IQ2_S],
                         ids=lambda t: t.name)  # fmt: skip
def test_dequantize_rows_equals_rows_of_full_tensor(ggml_type):
    block_size, _ = GGML_QUANT_SIZES[ggml_type]
    tensor = make_tensor(ggml_type, (37, 2 * max(block_size, 32)), seed=int(ggml_type))
    full = dequantize(tensor.raw, ggml_type, tensor.shape)

    rows = np.array([36, 0, 5, 5, 17])  # any order, repeats allowed
    assert same_bits(dequantize_rows(tensor, rows), full[rows])
    assert same_bits(dequantize_rows(tensor, [3]), full[[3]])
    assert same_bits(dequantize_rows(tensor, slice(4, 30, 3)), full[4:30:3])
    assert dequantize_rows(tensor, np.array([], dtype=np.int64)).shape == (0, tensor.shape[-1])


def test_dequantize_rows_of_3d_tensor_uses_flattened_rows():
    tensor = make_tensor(T.Q8_0, (2, 3, 64))
    full = dequantize(tensor.raw, T.Q8_0, tensor.shape).reshape(6, 64)
    assert same_bits(dequantize_rows(tensor, [5, 0]), full[[5, 0]])


def test_dequantize_rows_reads_only_the_chosen_rows():
    """Rows are cut from the raw bytes before decoding: bytes of other rows may be garbage."""
    tensor = make_tensor(T.Q8_0, (8, 64))
    good = dequantize_rows(tensor, [2])
    poisoned = tensor.raw.copy().reshape(8, -1)
    poisoned[[0, 1, 3, 4, 5, 6, 7]] = 0xFF  # f16 0xFFFF is NaN
    tensor_poisoned = TensorInfo(tensor.name, tensor.shape, T.Q8_0, 0, poisoned.size, poisoned.reshape(-1))
    assert same_bits(dequantize_rows(tensor_poisoned, [2]), good)


# --------------------------------------------------------------------------- quantization


def llamacpp_pattern(n: int = 32 * 128, offset: float = 0.0) -> np.ndarray:
    """llama.cpp test-quantize-fns' synthetic data: 0.1 + 2 cos(i + offset)."""
    return (0.1 + 2 * np.cos(np.arange(n, dtype=np.float32) + np.float32(offset))).astype(np.float32)


# llama.cpp test-quantize-fns: sqrt(sum of squared errors) / n on 4096 values must stay
# below MAX_QUANTIZATION_TOTAL_ERROR = 0.002, or the type's own looser threshold.
LLAMACPP_TOTAL_ERROR = {T.Q2_K: 0.0075, T.Q3_K: 0.0040, T.TQ1_0: 0.01, T.TQ2_0: 0.01, T.NVFP4: 0.003,
                        T.Q1_0: 0.025}  # fmt: skip


@pytest.mark.parametrize("ggml_type", SUPPORTED_QUANT_TYPES, ids=lambda t: t.name)
def test_round_trip_error_within_llamacpp_threshold(ggml_type):
    x = llamacpp_pattern()
    back = dequantize(quantize(x, ggml_type), ggml_type, x.shape)
    error = np.sqrt(np.sum((x.astype(np.float64) - back) ** 2)) / x.size
    assert error < LLAMACPP_TOTAL_ERROR.get(ggml_type, 0.002)


@pytest.mark.parametrize("ggml_type", LLAMACPP_QUANT_TYPES, ids=lambda t: t.name)
def test_quantize_matches_llamacpp_reference(golden, ggml_type):
    """Bit-exact with llama.cpp's quantize_row_<type>_ref on four kinds of data."""
    for x, expected in zip(golden["quant_input"], golden[f"quant_{ggml_type.name}"]):
        assert np.array_equal(quantize(x, ggml_type), expected)


@pytest.mark.parametrize("n_groups", [1, 2, 7])
def test_sum_in_order_adds_left_to_right_like_c(n_groups):
    """The scale searches' sums must follow C's float32 loop, whatever the batch size."""
    from refllm.quant.quantizers import sum_in_order

    values = (reproducible_values(32 * n_groups, "outliers", seed=n_groups) * 1000).reshape(32, n_groups)
    expected = []
    for group in range(n_groups):
        total = np.float32(0)
        for v in values[:, group]:
            total = np.float32(total + v)
        expected.append(total)
    assert np.array_equal(sum_in_order(values), np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("ggml_type", LLAMACPP_QUANT_TYPES, ids=lambda t: t.name)
def test_quantize_one_block_at_a_time_matches_llamacpp(golden, ggml_type):
    """The same bytes when each block is quantized alone (no batch-size effects)."""
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    x, expected = golden["quant_input"][0], golden[f"quant_{ggml_type.name}"][0]
    for b in range(0, x.size // block_size, 7):
        block = x[b * block_size : (b + 1) * block_size]
        assert np.array_equal(quantize(block, ggml_type), expected[b * type_size : (b + 1) * type_size]), b


@pytest.mark.parametrize("ggml_type", LLAMACPP_QUANT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("kind", ["normal", "uniform", "sparse", "outliers"])
def test_quantize_matches_llamacpp_on_256k_values(golden, ggml_type, kind):
    """256K values per kind (1024 super-blocks): the golden file keeps SHA-256 hashes of
    llama.cpp's output, 64 blocks per hash; the inputs are rebuilt bit-exactly here."""
    expected = golden[f"quant_big_{ggml_type.name}_{kind}"]  # [n_chunks, 32]
    raw = quantize(reproducible_values(256 * 1024, kind), ggml_type)
    chunks = raw.reshape(expected.shape[0], -1)
    ours = np.stack([np.frombuffer(hashlib.sha256(c.tobytes()).digest(), np.uint8) for c in chunks])
    differing = np.flatnonzero((ours != expected).any(axis=1))
    assert differing.size == 0, f"64-block chunks differing from llama.cpp: {differing.tolist()}"


def edge_case_rows(block_size: int) -> np.ndarray:
    """Rows that stress the scale logic: zeros, constants, one spike, ties, tiny values."""
    n = max(block_size, 32)
    rng = np.random.default_rng(7)
    spike = np.zeros(n, np.float32)
    spike[3] = -5.0
    ties = np.tile(np.array([1.0, -1.0], np.float32), n // 2)
    rows = [
        np.zeros(n, np.float32),
        np.full(n, 0.75, np.float32),
        np.full(n, -2.0, np.float32),
        spike,
        ties,
        (rng.standard_normal(n) * 1e-3).astype(np.float32),
        (rng.standard_normal(n) * 1e4).astype(np.float32),
        rng.uniform(0, 1, n).astype(np.float32),
    ]
    return np.stack(rows)


@pytest.mark.parametrize("ggml_type", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16, T.F16, T.TQ1_0,
                                       T.TQ2_0, T.MXFP4], ids=lambda t: t.name)  # fmt: skip
def test_quantize_matches_gguf_py(ggml_type):
    rng = np.random.default_rng(int(ggml_type))
    x = np.concatenate([rng.standard_normal((16, 256)).astype(np.float32), edge_case_rows(256)])
    expected = np.asarray(gguf.quants.quantize(x, ggml_type)).view(np.uint8).reshape(-1)
    assert np.array_equal(quantize(x, ggml_type), expected)


def per_block_step(x: np.ndarray, ggml_type: T) -> np.ndarray:
    """The quantization step d of each 32-weight block, from its definition."""
    blocks = x.reshape(-1, 32)
    if ggml_type in (T.Q4_0, T.Q5_0):
        return np.abs(blocks).max(axis=1) / (8 if ggml_type == T.Q4_0 else 16)
    if ggml_type in (T.Q4_1, T.Q5_1):
        return (blocks.max(axis=1) - blocks.min(axis=1)) / (15 if ggml_type == T.Q4_1 else 31)
    return np.abs(blocks).max(axis=1) / 127  # Q8_0


@pytest.mark.parametrize("ggml_type", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0], ids=lambda t: t.name)
def test_legacy_round_trip_error_bounded_by_step(ggml_type):
    """Rounding to nearest costs at most d/2 per weight (d for Q4_0/Q5_0, whose top level
    is clipped), plus storing d (and the min m) as f16: relative error 2^-11, times the
    largest level |q| for d."""
    x = np.random.default_rng(11).standard_normal(32 * 512).astype(np.float32)
    back = dequantize(quantize(x, ggml_type), ggml_type, x.shape)
    blocks = x.reshape(-1, 32)
    step = per_block_step(x, ggml_type)[:, None]
    largest_level = {T.Q4_0: 8, T.Q4_1: 15, T.Q5_0: 16, T.Q5_1: 31, T.Q8_0: 127}[ggml_type]
    rounding = 1.0 if ggml_type in (T.Q4_0, T.Q5_0) else 0.5
    f16_error = 2.0**-11 * (largest_level * step + np.abs(blocks.min(axis=1, keepdims=True)))
    allowed = rounding * step + f16_error + 1e-7
    assert (np.abs(back - x).reshape(-1, 32) <= allowed).all()


@pytest.mark.parametrize(
    "ggml_type, max_relative_rmse",
    # expected RMSE of a uniform quantizer on N(0, 1) data: step / sqrt(12), with
    # step ~ (range of the group) / levels; bounds keep ~25% headroom
    [(T.Q4_K, 0.09), (T.Q6_K, 0.022), (T.Q8_0, 0.007), (T.Q4_0, 0.11), (T.F16, 3e-4), (T.BF16, 2.5e-3)],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_round_trip_rmse_on_gaussian_data(ggml_type, max_relative_rmse):
    x = np.random.default_rng(5).standard_normal(256 * 256).astype(np.float32)
    back = dequantize(quantize(x, ggml_type), ggml_type, x.shape)
    assert np.sqrt(np.mean((back - x) ** 2)) / np.std(x) < max_relative_rmse


@pytest.mark.parametrize("ggml_type", SUPPORTED_QUANT_TYPES, ids=lambda t: t.name)
def test_quantize_edge_cases_round_trip_sensibly(ggml_type):
    x = edge_case_rows(256)
    raw = quantize(x, ggml_type)
    _, type_size = GGML_QUANT_SIZES[ggml_type]
    block_size, _ = GGML_QUANT_SIZES[ggml_type]
    assert raw.dtype == np.uint8 and raw.size == x.size // block_size * type_size
    back = dequantize(raw, ggml_type, x.shape)
    assert np.isfinite(back).all()
    assert (back[0] == 0).all()  # zeros stay zeros
    scale = np.abs(x).max(axis=1, keepdims=True)
    # within a fraction of each row's largest |x|: 15% for 4 bits and up, more for fewer levels
    fraction = {T.Q2_K: 0.3, T.Q3_K: 0.2, T.TQ1_0: 0.51, T.TQ2_0: 0.51, T.MXFP4: 0.25, T.NVFP4: 0.25,
                T.Q1_0: 1.0}.get(ggml_type, 0.15)  # fmt: skip
    rows = range(len(x))
    if ggml_type == T.NVFP4:  # UE4M3 scales span 2^-10 .. 224 only: the 1e-3 and 1e4 rows fall outside
        rows = [r for r in rows if 0.01 < scale[r, 0] < 1000 or scale[r, 0] == 0]
    assert (np.abs(back - x)[rows] <= fraction * scale[rows] + 1e-6).all()


@pytest.mark.parametrize("ggml_type", SUPPORTED_QUANT_TYPES, ids=lambda t: t.name)
def test_quantize_values_below_f16_range_flush_to_near_zero(ggml_type):
    """Scales below the smallest f16 (6e-8) round to 0, as in ggml: no NaN, no blow-up."""
    x = (np.random.default_rng(3).standard_normal(256) * 1e-7).astype(np.float32)
    back = dequantize(quantize(x, ggml_type), ggml_type, x.shape)
    assert np.isfinite(back).all() and np.abs(back).max() < 1e-5


def test_quantize_f32_is_the_raw_bytes():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert quantize(x, T.F32).tobytes() == x.tobytes()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad_type", [T.Q8_K, T.Q8_1, T.I8, T.I32, T.F64, 99, 12345])
def test_dequantize_unsupported_type_names_it(bad_type):
    with pytest.raises(UnsupportedQuantType) as caught:
        dequantize(np.zeros(1024, np.uint8), bad_type, (256,))
    assert str(getattr(bad_type, "name", bad_type)) in str(caught.value)
    assert isinstance(caught.value, UnsupportedModel) and isinstance(caught.value, RefllmError)


@pytest.mark.parametrize("bad_type", [T.IQ2_XXS, T.IQ3_S, T.IQ1_S, T.Q8_K, 77])
def test_quantize_unsupported_type_names_it(bad_type):
    with pytest.raises(UnsupportedQuantType, match=str(getattr(bad_type, "name", bad_type))):
        quantize(np.zeros(256, np.float32), bad_type)


def test_types_can_be_named_by_enum_id_or_name():
    raw = random_blocks(T.Q4_K, 2, np.random.default_rng(0)).reshape(-1)
    expected = dequantize(raw, T.Q4_K, (512,))
    assert same_bits(dequantize(raw, int(T.Q4_K), (512,)), expected)
    assert same_bits(dequantize(raw, "q4_k", (512,)), expected)
    with pytest.raises(UnsupportedQuantType, match="Q9_X"):
        dequantize(raw, "Q9_X", (512,))


def test_dequantize_rejects_wrong_byte_count_and_row_length():
    with pytest.raises(QuantDataError, match="needs 68 bytes, got 67"):
        dequantize(np.zeros(67, np.uint8), T.Q8_0, (64,))
    with pytest.raises(QuantDataError, match="not a multiple of the block size 32"):
        dequantize(np.zeros(34, np.uint8), T.Q8_0, (2, 16))
    with pytest.raises(QuantDataError, match="tuple of integers"):
        dequantize(np.zeros(34, np.uint8), T.Q8_0, ("a", 32))
    with pytest.raises(QuantDataError, match="negative"):
        dequantize(np.zeros(0, np.uint8), T.Q8_0, (-1, 32))


def test_quantize_rejects_bad_values_and_lengths():
    with pytest.raises(QuantDataError, match="NaN or infinite"):
        quantize(np.array([np.nan] + [0.0] * 31, np.float32), T.Q4_0)
    with pytest.raises(QuantDataError, match="multiple of the block size 256"):
        quantize(np.zeros(128, np.float32), T.Q4_K)
    with pytest.raises(QuantDataError):
        quantize(np.array(["a"] * 32), T.Q8_0)


def test_dequantize_rows_rejects_bad_indices():
    tensor = make_tensor(T.Q8_0, (4, 32))
    with pytest.raises(InvalidRequest, match="row 4 out of range"):
        dequantize_rows(tensor, [0, 4])
    with pytest.raises(InvalidRequest, match="row -1 out of range"):
        dequantize_rows(tensor, [-1])
    with pytest.raises(InvalidRequest, match="integers"):
        dequantize_rows(tensor, np.array([0.5]))
    with pytest.raises(InvalidRequest, match="1-D"):
        dequantize_rows(tensor, np.zeros((2, 2), np.int64))
