"""Numba small ops (refllm/kernels/numba_ops.py via numba_backend) against the NumPy reference ops.

The reference functions in refllm/kernels/reference.py are themselves checked
against llama.cpp and HF transformers by the golden-logit tests; here each
Numba op must agree with its reference on random data, every shape class.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from refllm.kernels import numba_backend as nb
from refllm.kernels import reference as ref

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(a, b, tol=2e-5):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(1, 576), (7, 640), (5, 4, 256)])
def test_rms_norm(shape):
    x, weight = randn(*shape), randn(shape[-1])
    close(nb.rms_norm(x, weight, 1e-6), ref.rms_norm(x, weight, 1e-6))


def test_softmax():
    x = randn(4, 9, 33) * 10
    close(nb.softmax(x), ref.softmax(x))
    close(nb.softmax(x, axis=0), ref.softmax(x, axis=0))


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("rotated_dims", [64, 32])  # whole head, or a partial rotation
def test_rope(neox, rotated_dims):
    x = randn(6, 9, 64)
    positions = np.array([0, 1, 2, 100, 4000, 8191])
    inv_freq = (1e5 ** (-np.arange(0, rotated_dims, 2) / rotated_dims)).astype(np.float32)
    close(nb.rope(x, positions, inv_freq, neox, 1.0), ref.rope(x, positions, inv_freq, neox, 1.0), tol=1e-4)
    close(nb.rope(x, positions, inv_freq, neox, 0.5), ref.rope(x, positions, inv_freq, neox, 0.5), tol=1e-4)


@pytest.mark.parametrize("n_new", [1, 3, 20])  # decode, a short batch, prefill (chunks on the tile threads)
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("heads,kv_heads,hd", [(9, 3, 64), (4, 1, 256)])
def test_attention_over_the_cache(n_new, window, heads, kv_heads, hd):
    n_past = 17
    n_ctx = n_past + n_new
    q = randn(n_new, heads, hd)
    k_cache, v_cache = randn(n_ctx, kv_heads, hd), randn(n_ctx, kv_heads, hd)
    positions = np.arange(n_past, n_ctx)
    scale = 1 / np.sqrt(hd)
    close(
        nb.attention(q, k_cache, v_cache, positions, scale, window),
        ref.attention(q, k_cache, v_cache, positions, scale, window),
    )


@pytest.fixture
def two_threads_split_everything(monkeypatch):
    """Prefill's thread-split paths on small data: two tile threads."""
    saved = nb.set_threads(None)
    nb._max_threads = 2  # even where NUMBA_NUM_THREADS is 1: run_tasks only needs Python threads
    yield
    nb.set_threads(saved)


def test_split_ops_match_the_reference(two_threads_split_everything):
    x = randn(37, 640)
    weight = randn(640)
    close(nb.rms_norm(x, weight, 1e-6), ref.rms_norm(x, weight, 1e-6))
    q, k_cache, v_cache = randn(30, 4, 64), randn(40, 2, 64), randn(40, 2, 64)
    positions = np.arange(10, 40)
    for window in (None, 7):
        close(nb.attention(q, k_cache, v_cache, positions, 0.125, window), ref.attention(q, k_cache, v_cache, positions, 0.125, window))


def test_run_tasks_runs_every_task_once_and_reraises(two_threads_split_everything):
    done = []

    def task(i):
        done.append(i)

    nb.run_tasks(task, 50)
    assert sorted(done) == list(range(50))

    def failing(i):
        if i == 7:
            raise ValueError("task 7 failed")

    with pytest.raises(ValueError, match="task 7"):
        nb.run_tasks(failing, 20)


def test_backend_bundle_has_every_op():
    from dataclasses import fields

    assert nb.BACKEND.name == "numba"
    for field in fields(ref.Backend):
        if field.name != "name" and field.default is not None:  # optional fields (default None) may stay None
            assert callable(getattr(nb.BACKEND, field.name))
    assert ref.get_backend("numba") is nb.BACKEND


def test_compile_notice_shows_once_when_numba_compiles(monkeypatch, capsys):
    import time

    import numba

    monkeypatch.setattr(nb, "NOTICE_AFTER_S", 0.0)
    monkeypatch.setattr(nb, "_notice_shown", False)

    def add_one(x):
        return x + 1

    add_one.__module__ = "refllm.kernels.example"  # the notice is for refllm's kernels only
    add_one = numba.njit(add_one)  # not cached: every call with a new type is a real compile

    @numba.njit
    def not_ours(x):
        return x - 1

    assert not_ours(1) == 0
    time.sleep(0.2)
    assert "compiling kernels" not in capsys.readouterr().err  # someone else's Numba code: no notice
    assert add_one(1) == 2
    time.sleep(0.2)  # the notice comes from a timer thread
    assert add_one(1.5) == 2.5  # a second compile: the notice is not repeated
    time.sleep(0.2)
    assert capsys.readouterr().err.count("compiling kernels") == 1


def test_decode_threads_follow_the_measured_faster_count(monkeypatch):
    """_DecodeThreads: measure both counts, keep the faster, try the other ever more rarely
    while it loses, and switch when a try wins (another process left the second core)."""
    monkeypatch.setattr(nb, "_max_threads", 2)
    monkeypatch.setattr(nb._DecodeThreads, "PHASE_CALLS", 4)
    choice = nb._DecodeThreads()
    n = nb.PARALLEL_MIN_WEIGHTS
    assert choice.choose(n - 1) == 1  # small matvecs always run on one thread

    def run_phases(count, seconds_on):
        used = []
        for _ in range(count):
            threads = choice.choose(n)
            used.append(threads)
            for _ in range(nb._DecodeThreads.PHASE_CALLS):
                choice.record(n, threads, seconds_on[threads])
        return used

    used = run_phases(40, {1: 1.0, 2: 3.0})  # the second core is busy: two threads lose
    assert used[:2] == [2, 1]  # each count measured once, all threads first
    tries = [i for i, threads in enumerate(used) if threads == 2][1:]
    assert len(tries) >= 2 and all(b - a > 2 for a, b in zip(tries, tries[1:]))  # tries get rarer
    assert used.count(2) < 8
    used = run_phases(80, {1: 1.0, 2: 0.6})  # the core is free again: a try wins and stays
    assert used[-10:] == [2] * 10


@pytest.mark.parametrize(
    "n,k,m",
    [(1, 5, 1), (3, 7, 5), (4, 64, 4), (67, 640, 130), (130, 96, 19)],  # leftover tokens / rows, >1 token block
)
def test_matmul_nt_matches_numpy_and_writes_only_its_columns(n, k, m):
    from refllm.kernels import numba_ops

    x, w = randn(n, k), randn(m, k)
    out = np.full((n, m + 7), np.nan, dtype=np.float32)
    numba_ops.matmul_nt(x, w, out, 3)  # into columns 3 .. 3 + m
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(out[:, 3 : 3 + m], want, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    assert np.isnan(out[:, :3]).all() and np.isnan(out[:, 3 + m :]).all()


@pytest.mark.parametrize("window", [0, 3])
def test_causal_softmax_rows_matches_masked_softmax(window):
    from refllm.kernels import numba_ops

    c, group, first_key, n_keys = 5, 3, 4, 12
    positions = np.arange(10, 10 + c)  # keys 4..15: the queries see up to their own position
    scores = randn(c * group, n_keys) * 3
    key_pos = np.arange(first_key, first_key + n_keys)
    query_pos = np.repeat(positions, group)[:, None]
    visible = key_pos[None, :] <= query_pos
    if window:
        visible &= key_pos[None, :] > query_pos - window
    want = ref.softmax(np.where(visible, scores, -np.inf))
    got = np.empty_like(scores)
    numba_ops.causal_softmax_rows(scores, positions, first_key, window, group, got)
    close(got, want)
    assert (got[~visible] == 0).all()


def test_concurrent_matvecs_survive_numbas_workqueue_layer(tiny_model):
    """Where neither libgomp nor TBB is installed Numba falls back to its workqueue layer,
    which aborts the process when two threads launch parallel kernels at once (a server's
    concurrent requests).  numba_backend makes such launches take turns there."""
    import subprocess
    import sys

    path = tiny_model("llama", "Q8_0")
    code = f"""
import threading, numpy as np, numba, refllm
from refllm.kernels import numba_backend
from refllm.kernels.reference import get_backend
model = refllm.load({str(path)!r})
w = model.transformer.weights.layers[0].w_gate
x = np.linspace(-1, 1, w.shape[1]).astype(np.float32)
expected = numba_backend.matvec(w, x).copy()
assert numba.threading_layer() == "workqueue"
errors = []
def work():
    for _ in range(300):
        if not np.array_equal(numba_backend.matvec(w, x), expected):
            errors.append("differs")
threads = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in threads]; [t.join() for t in threads]
print("ok", len(errors))
"""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["ok", "0"]


@pytest.mark.parametrize("shape", [(1,), (3, 5), (7, 16), (2, 3, 33)])
def test_aligned_arrays_start_on_a_cache_line(shape):
    a = nb.aligned_empty(shape)
    assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % nb.CACHE_LINE == 0
    x = randn(*shape)
    copy = nb.aligned(x[..., :]) if x.ctypes.data % nb.CACHE_LINE == 0 else nb.aligned(x)
    assert copy.ctypes.data % nb.CACHE_LINE == 0
    np.testing.assert_array_equal(copy, x)
    assert nb.aligned(copy) is copy  # already aligned: no copy
    shifted = np.empty(x.size + 1, np.float32)[1:].reshape(shape)  # 4 bytes past wherever NumPy put it
    shifted[...] = x
    assert shifted.ctypes.data % nb.CACHE_LINE != 0 and nb.aligned(shifted) is not shifted
    np.testing.assert_array_equal(nb.aligned(shifted), x)
    np.testing.assert_array_equal(nb.aligned(x.astype(np.float64)), x)  # other dtypes become float32


def test_exp_matches_float64_exp_over_softmax_range():
    """numba_ops._exp (the softmaxes' vectorisable exp) within 5e-7 of the exact value for -87 <= x <= 0."""
    from numba import njit

    from refllm.kernels import numba_ops
    from refllm.kernels.quantized import FAST

    @njit(fastmath=FAST)
    def exp_all(x, out):  # as the kernels call it: inlined into a fastmath loop
        for i in range(x.shape[0]):
            out[i] = numba_ops._exp(x[i])

    x = np.concatenate([-np.linspace(0, 87, 200_001), [0.0, -1e-30, -0.5 * np.log(2), -np.log(2), -86.9]]).astype(np.float32)
    got = np.empty_like(x)
    exp_all(x, got)
    exact = np.exp(x.astype(np.float64))
    assert np.abs(got - exact).max() <= 5e-7 * 1.0 and (np.abs(got - exact) / exact).max() <= 5e-7
    assert got[x == 0].tolist() == [1.0, 1.0]
    far = np.empty(3, np.float32)
    exp_all(np.array([-88.0, -200.0, -np.inf], np.float32), far)
    assert (far > 0).all() and (far < 2e-38).all()  # below float32's normal range: a negligible positive number


def test_compile_notice_ignores_functions_without_a_module():
    """Numba code of the same process whose function has no __module__ (made by exec) still compiles."""
    from numba import njit

    namespace: dict = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)  # __module__ is None: no __name__ in the namespace
    assert namespace["twice"].__module__ is None
    assert njit(namespace["twice"])(21) == 42
