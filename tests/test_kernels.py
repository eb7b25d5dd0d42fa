"""Numba quantized kernels (refllm/kernels/quantized.py) against independent dequantizers.

For every GGML type: random blocks (valid scales, random quant bits), then
``dequantize_<type>`` must equal the reference exactly and ``matvec_<type>``
must equal reference-weights @ x to float32 rounding, over the shape classes
the forward pass uses: one row, odd row counts, many rows, and the prefill
batch path of ``numba_backend.linear``.  The reference is ``refllm.quant``
where it covers the type, else gguf-py's ``gguf.quants`` (llama.cpp's Python
port, bit-exact with ggml); random blocks come from ``refllm.quant.testing``.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as gguf_quants

from refllm.gguf import TensorInfo
from refllm.kernels import numba_backend
from refllm.kernels.quantized import F16_TO_F32, KERNELS
from refllm.quant.testing import random_blocks

SHAPES = [(1, 256), (7, 512), (33, 768), (300, 256)]  # one row, odd counts, many rows


def random_weight(type_name: str, m: int, k: int, seed: int = 0) -> np.ndarray:
    """uint8 [m, row_bytes] of valid random blocks of ``type_name`` (finite scales)."""
    block_size, _ = GGML_QUANT_SIZES[T[type_name]]
    return random_blocks(T[type_name], m * k // block_size, np.random.default_rng(seed)).reshape(m, -1)


def reference_weights(type_name: str, raw: np.ndarray, m: int, k: int) -> np.ndarray:
    from refllm import quant

    if T[type_name] in quant.DEQUANTIZERS:
        return quant.dequantize(raw.reshape(-1), T[type_name], (m, k))
    return gguf_quants.dequantize(raw, T[type_name]).reshape(m, k).astype(np.float32)


def tensor(type_name: str, raw: np.ndarray, m: int, k: int) -> TensorInfo:
    flat = raw.reshape(-1)
    flat.flags.writeable = False
    return TensorInfo(name=f"test.{type_name}", shape=(m, k), ggml_type=T[type_name], offset=0, n_bytes=flat.size, raw=flat)


def assert_matvec_close(got: np.ndarray, weights: np.ndarray, x: np.ndarray) -> None:
    want = weights.astype(np.float64) @ x.astype(np.float64).T  # [m] or [m, n]
    scale = np.abs(weights).max() * np.abs(x).max() * np.sqrt(weights.shape[-1]) + 1e-30
    np.testing.assert_allclose(got, want.T.astype(np.float32), rtol=0, atol=2e-6 * scale)


@pytest.mark.parametrize("type_name", list(KERNELS))
def test_dequantize_and_matvec_match_reference(type_name):
    matvec_kernel, dequantize_kernel, inner = KERNELS[type_name]
    for seed, (m, k) in enumerate(SHAPES):
        raw = random_weight(type_name, m, k, seed)
        raw.flags.writeable = False
        weights = reference_weights(type_name, raw, m, k)  # [m, k]

        out = np.empty((m, k), dtype=np.float32)
        dequantize_kernel(raw, out, F16_TO_F32, inner)
        np.testing.assert_array_equal(out, weights)

        x = np.random.default_rng(100 + seed).standard_normal(k).astype(np.float32)
        y = np.empty(m, dtype=np.float32)
        matvec_kernel(raw, x, y, F16_TO_F32, inner)
        assert_matvec_close(y, weights, x)


@pytest.mark.parametrize("type_name", list(KERNELS))
def test_matvec_keeps_nan_and_inf(type_name):
    # fastmath without 'nnan'/'ninf', and the x-sum shortcuts (sum((q - 8) x) = sum(q x) - 8 sum(x)
    # and the like) must still carry a non-finite activation into every output, as W @ x does.
    matvec_kernel, _, inner = KERNELS[type_name]
    m, k = 9, 512
    raw = random_weight(type_name, m, k, seed=5)
    raw.flags.writeable = False
    for bad in (np.nan, np.inf, -np.inf):
        x = np.random.default_rng(5).standard_normal(k).astype(np.float32)
        x[300] = bad
        y = np.empty(m, dtype=np.float32)
        matvec_kernel(raw, x, y, F16_TO_F32, inner)
        assert not np.isfinite(y).any(), (bad, y)
        if np.isnan(bad):
            assert np.isnan(y).all()


@pytest.mark.parametrize("type_name", ["F16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"])
@pytest.mark.parametrize("n_tokens", [1, 2, 5, 40])
def test_backend_linear_decode_and_prefill_paths(type_name, n_tokens, monkeypatch):
    # A small tile size makes the prefill path cross several tiles, with a ragged last one.
    monkeypatch.setattr(numba_backend, "TILE_WEIGHTS", 256 * 24)
    m, k = 70, 512
    raw = random_weight(type_name, m, k, seed=n_tokens)
    w = tensor(type_name, raw, m, k)
    x = np.random.default_rng(n_tokens).standard_normal((n_tokens, k)).astype(np.float32)
    got = numba_backend.linear(x, w)  # [n, m]
    assert got.shape == (n_tokens, m) and got.dtype == np.float32
    assert_matvec_close(got, reference_weights(type_name, raw, m, k), x)


def test_prefill_path_on_one_and_two_threads(monkeypatch):
    # The tiles (their count follows the threads) are tasks shared out to the tile threads.
    monkeypatch.setattr(numba_backend, "TILE_WEIGHTS", 256 * 16)
    m, k = 100, 512
    w = tensor("Q4_K", random_weight("Q4_K", m, k, seed=9), m, k)
    x = np.random.default_rng(9).standard_normal((12, k)).astype(np.float32)
    saved = numba_backend.set_threads(None)
    try:
        numba_backend._max_threads = 1
        one = numba_backend.linear(x, w)
        numba_backend._max_threads = 2
        two = numba_backend.linear(x, w)
    finally:
        numba_backend.set_threads(saved)
    weights = reference_weights("Q4_K", w.raw, m, k)
    assert_matvec_close(one, weights, x)
    assert_matvec_close(two, weights, x)


@pytest.mark.parametrize("n_tokens", [1, 12])
@pytest.mark.parametrize("threads", [1, 2])
def test_linears_equal_one_linear_each(n_tokens, threads, monkeypatch):
    """Several weights of one input (q, k, v): mixed types and sizes, tiles shared out together,
    each output exactly what linear alone gives; a type without a kernel goes to the reference."""
    from refllm.kernels.reference import NUMPY_BACKEND

    monkeypatch.setattr(numba_backend, "TILE_WEIGHTS", 256 * 16)
    k = 512
    ws = [tensor(t, random_weight(t, m, k, seed=m), m, k) for t, m in (("Q4_K", 100), ("Q5_0", 33), ("Q8_0", 64))]
    x = np.random.default_rng(3).standard_normal((n_tokens, k)).astype(np.float32)
    saved = numba_backend.set_threads(None)
    try:
        numba_backend._max_threads = threads
        together = numba_backend.BACKEND.linears(x, ws)
        alone = [numba_backend.linear(x, w) for w in ws]
    finally:
        numba_backend.set_threads(saved)
    for got, one, w in zip(together, alone, ws):
        np.testing.assert_array_equal(got, one)
        assert_matvec_close(got, reference_weights(w.ggml_type.name, w.raw, w.shape[0], k), x)
    calls = []
    monkeypatch.setattr(numba_backend.reference, "linear", lambda x, w: calls.append(w.name) or np.zeros((len(x), 1)))
    odd = TensorInfo(name="odd", shape=(1, k), ggml_type=T.IQ2_XXS, offset=0, n_bytes=132, raw=np.zeros(132, np.uint8))
    fallback, kernel = numba_backend.linears(x, [odd, ws[0]])
    assert fallback.shape == (n_tokens, 1) and calls == ["odd"]
    np.testing.assert_array_equal(kernel, alone[0])
    # a backend without linear_many runs them one by one through its own linear
    assert [o.shape for o in NUMPY_BACKEND.linears(x, ws)] == [(n_tokens, 100), (n_tokens, 33), (n_tokens, 64)]


def test_embedding_rows_any_order_and_repeats():
    m, k = 50, 256
    raw = random_weight("Q6_K", m, k, seed=3)
    w = tensor("Q6_K", raw, m, k)
    ids = np.array([49, 0, 7, 7, 13])
    np.testing.assert_array_equal(numba_backend.embedding_rows(w, ids), reference_weights("Q6_K", raw, m, k)[ids])


def test_embedding_rows_out_of_range_is_a_clear_error():
    from refllm.errors import RefllmError

    w = tensor("Q8_0", random_weight("Q8_0", 4, 64), 4, 64)
    with pytest.raises(RefllmError, match="out of range"):
        numba_backend.embedding_rows(w, np.array([4]))


def test_unsupported_type_falls_back_to_the_reference(monkeypatch):
    # A type with no Numba kernel goes through reference.linear (which raises its own clear error if it can't).
    calls = []
    monkeypatch.setattr(numba_backend.reference, "linear", lambda x, w: calls.append(w.name) or np.zeros((1, 1)))
    w = TensorInfo(name="odd", shape=(1, 256), ggml_type=T.IQ2_XXS, offset=0, n_bytes=66, raw=np.zeros(66, np.uint8))
    numba_backend.linear(np.zeros((1, 256), np.float32), w)
    assert calls == ["odd"] and not numba_backend.supports(T.IQ2_XXS)


def test_every_kernel_is_its_own_top_level_function():
    # Variants made by one factory would share a cache entry (same qualname and source line).
    functions = [f for kernels in KERNELS.values() for f in kernels[:2]]
    keys = {(f.py_func.__qualname__, f.py_func.__code__.co_firstlineno) for f in functions}
    assert len(keys) == len(functions)
    assert all("<locals>" not in f.py_func.__qualname__ for f in functions)


def test_real_model_tensors_match_the_reference(smollm2_gguf, gemma3_gguf):
    """One real tensor of every type the two packaged models use (Q4_1, Q8_0, Q5_0, Q4_K, Q6_K, F32)."""
    from refllm import quant
    from refllm.gguf import read

    seen = set()
    for path in (smollm2_gguf, gemma3_gguf):
        gguf_file = read(path)
        for info in gguf_file.tensors.values():
            if info.ggml_type in seen or len(info.shape) != 2 or info.n_elements > 4_000_000:
                continue
            seen.add(info.ggml_type)
            weights = quant.dequantize(info.raw, info.ggml_type, info.shape)
            x = np.random.default_rng(0).standard_normal((1, info.shape[1])).astype(np.float32)
            assert_matvec_close(numba_backend.linear(x, info), weights, x)
            x3 = np.random.default_rng(1).standard_normal((3, info.shape[1])).astype(np.float32)
            assert_matvec_close(numba_backend.linear(x3, info), weights, x3)
    assert {T.Q4_1, T.Q8_0, T.Q5_0, T.Q4_K, T.Q6_K} <= seen
