"""Every tensor of the two real models dequantizes bit-exactly like gguf-py.

SmolLM2-135M (Q4_1 / Q8_0 / F32) and Gemma 3 270M (Q5_0 / Q8_0 / Q4_K / Q6_K / F32).
Gemma's 262144 x 640 token embedding is checked through ``dequantize_rows``
(the path embedding lookup uses): random rows, then the whole table in slices
of 16384 rows (so neither side holds 670 MB of floats); every other tensor is
dequantized whole.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES

import refllm.gguf
from refllm.quant import dequantize, dequantize_rows

BIG_TENSOR_ROWS = 100_000  # above this, compare sampled rows only


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model_file(request, smollm2_gguf, gemma3_gguf):
    return refllm.gguf.read(smollm2_gguf if request.param == "smollm2" else gemma3_gguf)


def gguf_py_rows(tensor, rows=None) -> np.ndarray:
    """gguf-py's dequantization of a tensor (or of some of its rows) as [n_rows, row_length]."""
    block_size, type_size = GGML_QUANT_SIZES[tensor.ggml_type]
    row_bytes = tensor.shape[-1] // block_size * type_size
    table = tensor.raw.reshape(-1, row_bytes)
    if rows is not None:
        table = table[rows]
    return gguf.quants.dequantize(table, tensor.ggml_type).reshape(table.shape[0], tensor.shape[-1])


def same_bits(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_every_tensor_matches_gguf_py(model_file):
    checked = 0
    for name, tensor in model_file.tensors.items():
        n_rows = tensor.n_elements // tensor.shape[-1]
        if n_rows > BIG_TENSOR_ROWS:
            continue  # sampled in the test below
        ours = dequantize(tensor.raw, tensor.ggml_type, tensor.shape)
        assert ours.shape == tensor.shape, name
        assert same_bits(ours.reshape(n_rows, -1), gguf_py_rows(tensor)), name
        checked += 1
    assert checked >= len(model_file.tensors) - 1


def test_big_embedding_rows_match_gguf_py(model_file):
    tensor = model_file.tensors["token_embd.weight"]
    n_rows = tensor.shape[0]
    rng = np.random.default_rng(0)
    rows = np.concatenate([[0, 1, n_rows - 1], rng.integers(0, n_rows, 300)])
    assert same_bits(dequantize_rows(tensor, rows), gguf_py_rows(tensor, rows))
    assert same_bits(dequantize_rows(tensor, slice(1000, 1010)), gguf_py_rows(tensor, slice(1000, 1010)))


def test_model_quant_types_are_the_expected_ones(model_file):
    """Guards the coverage claim of this file: these are the types exercised above."""
    types = {t.ggml_type.name for t in model_file.tensors.values()}
    expected = {"llama": {"F32", "Q4_1", "Q8_0"}, "gemma3": {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}}
    assert types == expected[model_file.architecture]


def test_gemma_embedding_whole_table_in_slices(gemma3_gguf):
    tensor = refllm.gguf.read(gemma3_gguf).tensors["token_embd.weight"]
    n_rows = tensor.shape[0]
    assert n_rows > BIG_TENSOR_ROWS  # so the whole-tensor test above left it out
    for start in range(0, n_rows, 16384):
        rows = slice(start, min(start + 16384, n_rows))
        assert same_bits(dequantize_rows(tensor, rows), gguf_py_rows(tensor, rows)), start
