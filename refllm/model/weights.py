"""Looking up a model's tensors by their GGUF names, with clear errors.

Matrices stay ``TensorInfo`` views into the memory map (quantized); only small
vectors (norm weights, biases, rope factors) are dequantized once to float32.
A missing tensor or one of the wrong shape is an ``UnsupportedModel`` error.
"""

from __future__ import annotations

import numpy as np

from refllm.errors import UnsupportedModel
from refllm.gguf import GGUFFile, TensorInfo
from refllm.quant import dequantize


def matrix(gguf: GGUFFile, name: str, shape: tuple[int, int]) -> TensorInfo:
    """A weight matrix of NumPy shape (out, in), left quantized."""
    info = gguf.tensors.get(name)
    if info is None:
        raise UnsupportedModel(f"{gguf.path.name}: tensor '{name}' is missing")
    if tuple(info.shape) != tuple(shape):
        raise UnsupportedModel(f"{gguf.path.name}: tensor '{name}' has shape {tuple(info.shape)}, expected {tuple(shape)}")
    return info


def vector(gguf: GGUFFile, name: str, size: int) -> np.ndarray:
    """A small 1-D tensor (a norm weight, a bias) as float32[size]."""
    info = matrix(gguf, name, (size,))
    return dequantize(info.raw, info.ggml_type, info.shape).astype(np.float32, copy=False)


def optional_vector(gguf: GGUFFile, name: str, size: int) -> np.ndarray | None:
    return vector(gguf, name, size) if name in gguf.tensors else None


def output_head(gguf: GGUFFile, n_vocab: int, n_embd: int) -> TensorInfo:
    """``output.weight``, or the token embedding when the model ties them."""
    name = "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"
    return matrix(gguf, name, (n_vocab, n_embd))
