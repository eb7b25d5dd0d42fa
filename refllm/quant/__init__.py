"""Dequantizers (GGML block formats -> float32) and reference quantizers.

One small NumPy function per format, each a readable reference that the
Numba kernels are checked against:

    dequantize_<type>(blocks: [n_blocks, type_size] uint8) -> [n_blocks, block_size] float32
    quantize_<type>(values: [n_blocks, block_size] float32) -> [n_blocks, type_size] uint8

Where each format lives (every module draws its block layouts in its docstring):

    floats.py      F32, F16, BF16                                  dequantize, quantize
    legacy.py      Q4_0, Q4_1, Q5_0, Q5_1, Q8_0                    dequantize
    kquants.py     Q2_K, Q3_K, Q4_K, Q5_K, Q6_K                    dequantize
    iquants.py     IQ4_NL, IQ4_XS, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,  dequantize
                   IQ2_S, IQ3_XXS, IQ3_S   (grids: iq_grids.py)
    ternary.py     TQ1_0, TQ2_0, Q1_0                              dequantize
    fp4.py         MXFP4, NVFP4                                    dequantize
    quantizers.py  every block type above except the grid i-quants (IQ1_*, IQ2_*, IQ3_*):
                   llama.cpp's reference quantizers, byte for byte
    testing.py     random valid blocks and machine-independent test values

Public API:

    dequantize(raw, ggml_type, shape)   whole tensor -> float32 array of ``shape``
    dequantize_rows(tensor, rows)       only the chosen rows of a tensor
    quantize(array, ggml_type)          float32 -> raw block bytes (flat uint8)
    DEQUANTIZERS, QUANTIZERS            GGMLQuantizationType -> per-block function
    SUPPORTED_DEQUANT_TYPES, SUPPORTED_QUANT_TYPES

``ggml_type`` may be a GGMLQuantizationType, its integer id or its name.
Shapes are in NumPy order: ``shape[-1]`` is the contiguous axis (ggml's ne0),
and every row is a whole number of blocks.  Bad input raises
UnsupportedQuantType (an UnsupportedModel), QuantDataError or InvalidRequest.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from refllm.errors import InvalidRequest, RefllmError, UnsupportedModel
from refllm.quant import floats, fp4, iquants, kquants, legacy, ternary
from refllm.quant import quantizers

__all__ = [
    "DEQUANTIZERS",
    "QUANTIZERS",
    "SUPPORTED_DEQUANT_TYPES",
    "SUPPORTED_QUANT_TYPES",
    "UnsupportedQuantType",
    "QuantDataError",
    "dequantize",
    "dequantize_rows",
    "quantize",
    "block_layout",
]


class UnsupportedQuantType(UnsupportedModel):
    """A GGML type we cannot (de)quantize. The message names the type."""


class QuantDataError(RefllmError):
    """Raw bytes or a shape that do not fit the type's block layout."""


DEQUANTIZERS: dict[T, Callable[[np.ndarray], np.ndarray]] = {
    T.F32: floats.dequantize_f32,
    T.F16: floats.dequantize_f16,
    T.BF16: floats.dequantize_bf16,
    T.Q4_0: legacy.dequantize_q4_0,
    T.Q4_1: legacy.dequantize_q4_1,
    T.Q5_0: legacy.dequantize_q5_0,
    T.Q5_1: legacy.dequantize_q5_1,
    T.Q8_0: legacy.dequantize_q8_0,
    T.Q2_K: kquants.dequantize_q2_k,
    T.Q3_K: kquants.dequantize_q3_k,
    T.Q4_K: kquants.dequantize_q4_k,
    T.Q5_K: kquants.dequantize_q5_k,
    T.Q6_K: kquants.dequantize_q6_k,
    T.IQ4_NL: iquants.dequantize_iq4_nl,
    T.IQ4_XS: iquants.dequantize_iq4_xs,
    T.IQ1_S: iquants.dequantize_iq1_s,
    T.IQ1_M: iquants.dequantize_iq1_m,
    T.IQ2_XXS: iquants.dequantize_iq2_xxs,
    T.IQ2_XS: iquants.dequantize_iq2_xs,
    T.IQ2_S: iquants.dequantize_iq2_s,
    T.IQ3_XXS: iquants.dequantize_iq3_xxs,
    T.IQ3_S: iquants.dequantize_iq3_s,
    T.TQ1_0: ternary.dequantize_tq1_0,
    T.TQ2_0: ternary.dequantize_tq2_0,
    T.MXFP4: fp4.dequantize_mxfp4,
    T.NVFP4: fp4.dequantize_nvfp4,
    T.Q1_0: ternary.dequantize_q1_0,
}

QUANTIZERS: dict[T, Callable[[np.ndarray], np.ndarray]] = {
    T.F32: floats.quantize_f32,
    T.F16: floats.quantize_f16,
    T.BF16: floats.quantize_bf16,
    T.Q4_0: quantizers.quantize_q4_0,
    T.Q4_1: quantizers.quantize_q4_1,
    T.Q5_0: quantizers.quantize_q5_0,
    T.Q5_1: quantizers.quantize_q5_1,
    T.Q8_0: quantizers.quantize_q8_0,
    T.Q2_K: quantizers.quantize_q2_k,
    T.Q3_K: quantizers.quantize_q3_k,
    T.Q4_K: quantizers.quantize_q4_k,
    T.Q5_K: quantizers.quantize_q5_k,
    T.Q6_K: quantizers.quantize_q6_k,
    T.TQ1_0: quantizers.quantize_tq1_0,
    T.TQ2_0: quantizers.quantize_tq2_0,
    T.MXFP4: quantizers.quantize_mxfp4,
    T.IQ4_NL: quantizers.quantize_iq4_nl,
    T.IQ4_XS: quantizers.quantize_iq4_xs,
    T.NVFP4: quantizers.quantize_nvfp4,
    T.Q1_0: quantizers.quantize_q1_0,
}

SUPPORTED_DEQUANT_TYPES: tuple[T, ...] = tuple(DEQUANTIZERS)
SUPPORTED_QUANT_TYPES: tuple[T, ...] = tuple(QUANTIZERS)

# Blocks handled per step: bounds the temporaries (~1 M weights at a time).
_WEIGHTS_PER_CHUNK = 1 << 20


def _type_name(ggml_type) -> str:
    return getattr(ggml_type, "name", repr(ggml_type))


def _as_type(ggml_type) -> T:
    """A GGMLQuantizationType, its integer id, or its name ("Q4_K") -> the enum member."""
    try:
        if isinstance(ggml_type, str):
            return T[ggml_type.upper()]
        return T(ggml_type)
    except (KeyError, ValueError, TypeError):
        raise UnsupportedQuantType(f"unknown GGML tensor type {ggml_type!r}") from None


def block_layout(ggml_type) -> tuple[int, int]:
    """(weights per block, bytes per block) of a GGML type."""
    ggml_type = _as_type(ggml_type)
    return GGML_QUANT_SIZES[ggml_type]


def _dequantizer(ggml_type) -> tuple[T, Callable[[np.ndarray], np.ndarray]]:
    ggml_type = _as_type(ggml_type)
    if ggml_type not in DEQUANTIZERS:
        raise UnsupportedQuantType(
            f"cannot dequantize GGML type {_type_name(ggml_type)}: supported types are "
            + ", ".join(t.name for t in SUPPORTED_DEQUANT_TYPES)
        )
    return ggml_type, DEQUANTIZERS[ggml_type]


def _as_bytes(raw: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """Any buffer -> flat uint8 array (a view, no copy)."""
    if isinstance(raw, np.ndarray):
        return raw.reshape(-1).view(np.uint8) if raw.dtype != np.uint8 else raw.reshape(-1)
    return np.frombuffer(raw, dtype=np.uint8)


def _dequantize_blocks(blocks: np.ndarray, function, block_size: int) -> np.ndarray:
    """[n_blocks, type_size] uint8 -> [n_blocks * block_size] float32, in chunks."""
    n_blocks = blocks.shape[0]
    out = np.empty((n_blocks, block_size), dtype=np.float32)
    step = max(1, _WEIGHTS_PER_CHUNK // block_size)
    # A stored inf/NaN scale gives inf/NaN weights, exactly as in llama.cpp; no warnings.
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n_blocks, step):
            out[start : start + step] = function(blocks[start : start + step])
    return out.reshape(-1)


def dequantize(raw: np.ndarray | bytes, ggml_type: T, shape: tuple[int, ...]) -> np.ndarray:
    """Raw tensor bytes -> float32 array of ``shape`` (NumPy order)."""
    ggml_type, function = _dequantizer(ggml_type)
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise QuantDataError(f"{ggml_type.name}: shape must be a tuple of integers, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise QuantDataError(f"{ggml_type.name}: negative dimension in shape {shape}")
    row_length = shape[-1] if shape else 1
    if row_length % block_size != 0:
        raise QuantDataError(
            f"{ggml_type.name}: row length {row_length} is not a multiple of the block size {block_size}"
        )
    n_weights = int(np.prod(shape, dtype=np.int64))
    expected_bytes = n_weights // block_size * type_size
    data = _as_bytes(raw)
    if data.size != expected_bytes:
        raise QuantDataError(
            f"{ggml_type.name} tensor of shape {shape} needs {expected_bytes} bytes, got {data.size}"
        )
    blocks = data.reshape(-1, type_size)  # [n_blocks, type_size]
    return _dequantize_blocks(blocks, function, block_size).reshape(shape)


def dequantize_rows(tensor, rows: np.ndarray | slice | list[int]) -> np.ndarray:
    """Dequantize only ``rows`` of a tensor viewed as [n_rows, shape[-1]].

    Each row is ``shape[-1] / block_size`` whole blocks, so row r is the byte
    span ``[r * row_bytes, (r + 1) * row_bytes)``: only those bytes are read.
    (An embedding lookup of a few token ids touches a few KiB, never the table.)

    tensor: a ``TensorInfo`` (``.shape``, ``.ggml_type``, ``.raw``, ``.name``)
    rows:   integer indices (any order, repeats allowed) or a slice
    -> float32 [len(rows), shape[-1]]
    """
    ggml_type, function = _dequantizer(tensor.ggml_type)
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    name = getattr(tensor, "name", "tensor")
    shape = tuple(int(d) for d in tensor.shape)
    row_length = shape[-1]
    n_rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if row_length % block_size != 0:
        raise QuantDataError(f"{name}: row length {row_length} is not a multiple of {block_size}")
    row_bytes = row_length // block_size * type_size
    data = _as_bytes(tensor.raw)
    if data.size != n_rows * row_bytes:
        raise QuantDataError(f"{name}: {data.size} bytes do not hold {n_rows} rows of {row_bytes}")
    table = data.reshape(n_rows, row_bytes)  # [n_rows, row_bytes], a view

    if isinstance(rows, slice):
        chosen = table[rows]  # [k, row_bytes], still a view
    else:
        index = np.asarray(rows)
        if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
            raise InvalidRequest(f"{name}: row indices must be a 1-D array of integers")
        if index.size and (index.min() < 0 or index.max() >= n_rows):
            bad = int(index.min()) if index.min() < 0 else int(index.max())
            raise InvalidRequest(f"{name}: row {bad} out of range (the tensor has {n_rows} rows)")
        chosen = table[index.astype(np.int64)]  # [k, row_bytes], copies only these rows
    n_chosen = chosen.shape[0]
    blocks = chosen.reshape(-1, type_size)  # [k * blocks_per_row, type_size]
    return _dequantize_blocks(blocks, function, block_size).reshape(n_chosen, row_length)


def quantize(array: np.ndarray, ggml_type: T) -> np.ndarray:
    """float32 array (rows of whole blocks) -> raw bytes, flat uint8."""
    ggml_type = _as_type(ggml_type)
    if ggml_type not in QUANTIZERS:
        raise UnsupportedQuantType(
            f"cannot quantize to GGML type {ggml_type.name}: supported types are "
            + ", ".join(t.name for t in SUPPORTED_QUANT_TYPES)
        )
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise QuantDataError(f"cannot quantize {type(array).__name__} to {ggml_type.name}: {error}") from None
    if block_size > 1 and not np.isfinite(values).all():
        raise QuantDataError(f"cannot quantize NaN or infinite values to {ggml_type.name}")
    row_length = values.shape[-1] if values.ndim else 1
    if row_length % block_size != 0:
        raise QuantDataError(
            f"{ggml_type.name}: row length {row_length} is not a multiple of the block size {block_size}"
        )
    blocks = np.ascontiguousarray(values).reshape(-1, block_size)  # [n_blocks, block_size]
    out = np.empty((blocks.shape[0], type_size), dtype=np.uint8)
    step = max(1, _WEIGHTS_PER_CHUNK // block_size)
    for start in range(0, blocks.shape[0], step):
        out[start : start + step] = QUANTIZERS[ggml_type](blocks[start : start + step])
    return out.reshape(-1)
