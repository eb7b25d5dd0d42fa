"""A whole model on the ``cuda`` backend: the NumPy backend's logits, activations and KV cache on the device.

Runs on a GPU where there is one, else in Numba's CUDA simulator (tests/conftest.py),
which executes every GPU thread as Python: so the models here are micro versions of
the tiny synthetic ones (32-wide, one layer, 300-token vocabulary).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from numba import cuda

import refllm
from refllm.kernels.cuda.tensor import DeviceTensor

MICRO = dict(n_embd=32, n_layer=1, n_head=2, n_head_kv=1, head_dim=16, n_ff=32, n_vocab=300)


@pytest.fixture(scope="module", autouse=True)
def quick_simulator_barriers():
    """The simulator runs a thread block's threads as Python threads that meet at every
    syncthreads(); with Python's 5 ms GIL switch interval each meeting costs ~5 ms.
    A 0.1 ms interval makes this file ~5x faster and changes no result."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        yield
        return
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(before)


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory):
    """``micro_model(arch, qtype) -> Path``, written once per module."""
    from dataclasses import replace

    from conftest import load_tool

    make = load_tool("make_tiny_models")
    outdir = tmp_path_factory.mktemp("micro")
    written = {}

    def write(arch: str, qtype: str):
        if (arch, qtype) not in written:
            config = replace(make.CONFIGS[arch], **MICRO)
            if arch == "gemma3":
                config = replace(config, sliding_window=2)  # so the window matters at 3 tokens
            path = outdir / f"micro-{arch}-{qtype}.gguf"
            written[arch, qtype] = make.write_tiny_model(path, arch, qtype, config=config)
        return written[arch, qtype]

    return write


def cuda_model(path):
    model = refllm.load(path)
    model.backend = "cuda"
    return model


@pytest.mark.parametrize("arch,qtype", [("llama", "Q8_0"), ("qwen2", "Q4_1"), ("qwen3", "Q5_0"), ("gemma3", "Q4_0")])
def test_device_resident_forward_matches_numpy(micro_model, arch, qtype):
    """Prefill, two decode steps, then a rewind to a shared prefix and a new prefill."""
    path = micro_model(arch, qtype)
    ids = [5, 70, 200, 9, 41]
    reference = refllm.load(path)
    reference.backend = "numpy"
    expected = reference.logits(ids)  # [5, n_vocab], one fresh context

    model = cuda_model(path)
    cache = model.new_cache(8)
    assert all(isinstance(a, DeviceTensor) for a in cache.keys + cache.values)
    got = [model.forward(ids[:2], cache)]  # prefill: logits at position 1
    got += [model.forward([token], cache) for token in ids[2:4]]  # decode: positions 2 and 3
    assert cache.n_past == 4
    cache.truncate(2)  # keep the prefix [5, 70], as a session does for a new prompt
    again = model.forward(ids[2:], cache, all_logits=True)  # positions 2, 3, 4 on the rewound cache

    for logits in [*got, again]:
        assert type(logits) is np.ndarray and logits.dtype == np.float32
    np.testing.assert_allclose(np.vstack(got), expected[1:4], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(again, expected[2:], rtol=1e-4, atol=1e-4)
    assert np.array_equal(again.argmax(-1), expected[2:].argmax(-1))


@pytest.mark.parametrize("arch,qtype", [("qwen2", "Q8_0"), ("gemma3", "Q8_0")])  # biases; embedding scale, QK-norm
def test_a_decode_step_downloads_only_the_logits(micro_model, arch, qtype, monkeypatch):
    """After the prefill has uploaded the weights, one decode step copies to the device only
    the token id and its position, and back only the logits: the KV cache and the
    activations stay on the device."""
    model = cuda_model(micro_model(arch, qtype))
    cache = model.new_cache(8)
    model.forward([5, 70], cache)

    uploaded, downloaded = [], []
    device_array_type = type(cache.keys[0].data)
    real_to_device, real_copy_to_host, real_copy_to_device = (
        cuda.to_device, device_array_type.copy_to_host, device_array_type.copy_to_device)

    def to_device(array, *args, **kwargs):
        uploaded.append(np.array(array).tolist())
        return real_to_device(array, *args, **kwargs)

    def copy_to_host(self, *args, **kwargs):
        downloaded.append(tuple(self.shape))
        return real_copy_to_host(self, *args, **kwargs)

    def copy_to_device(self, source, *args, **kwargs):
        if not isinstance(source, device_array_type):  # device -> device copies (the cache) are fine
            uploaded.append(np.array(source).tolist())
        return real_copy_to_device(self, source, *args, **kwargs)

    monkeypatch.setattr(cuda, "to_device", to_device)
    monkeypatch.setattr(device_array_type, "copy_to_host", copy_to_host)
    monkeypatch.setattr(device_array_type, "copy_to_device", copy_to_device)
    logits = model.forward([200], cache)

    assert downloaded == [(MICRO["n_vocab"],)]
    assert sorted(uploaded) == [[2], [200]]  # the position and the token id
    assert logits.shape == (MICRO["n_vocab"],)


def test_generate_on_cuda_gives_the_numpy_greedy_text_and_reuses_the_session(micro_model):
    from refllm.generate import Session

    path = micro_model("llama", "Q8_0")
    options = {"temperature": 0, "num_predict": 3, "num_ctx": 16, "seed": 1}
    reference = refllm.load(path)
    reference.backend = "numpy"
    model = cuda_model(path)

    expected = reference.generate("hello", raw=True, options=options)
    session = Session()
    got = model.generate("hello", raw=True, options=options, session=session)
    assert (got.tokens, got.text) == (expected.tokens, expected.text)
    assert isinstance(session.cache.keys[0], DeviceTensor)

    expected_next = reference.generate("hello world", raw=True, options=options)
    got_next = model.generate("hello world", raw=True, options=options, session=session)
    assert got_next.cached_count > 0  # the device cache was rewound to the shared prefix
    assert (got_next.tokens, got_next.text) == (expected_next.tokens, expected_next.text)


def test_a_weight_type_without_a_cuda_kernel_runs_on_numpy_and_comes_back(micro_model):
    """IQ4_NL has no CUDA kernel: its matmuls (and embedding rows) go through the host."""
    path = micro_model("llama", "IQ4_NL")
    reference = refllm.load(path)
    reference.backend = "numpy"
    expected = reference.logits([5, 70])
    got = cuda_model(path).logits([5, 70])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_hidden_states_on_cuda_match_numpy(micro_model):
    """The embeddings path: final-normed hidden states come back as NumPy arrays."""
    path = micro_model("gemma3", "Q4_0")
    reference = refllm.load(path)
    reference.backend = "numpy"
    got = cuda_model(path).hidden_states([5, 70, 200])
    assert type(got) is np.ndarray and got.shape == (3, MICRO["n_embd"])
    np.testing.assert_allclose(got, reference.hidden_states([5, 70, 200]), rtol=1e-4, atol=1e-4)


def test_refllm_run_and_the_server_answer_on_cuda(micro_model, refllm_server, capsys, monkeypatch):
    """``refllm run --backend cuda`` (in this process, so the simulator is on where there is no
    GPU) and a server whose loaded model runs on cuda give the NumPy backend's greedy text."""
    import requests

    from refllm.cli.main import main

    path = str(micro_model("llama", "Q8_0"))
    monkeypatch.setattr(sys, "stdin", None)  # no piped input: the prompt is the words
    command = ["run", path, "hello", "--raw", "-n", "3", "--temperature", "0", "--num-ctx", "16"]
    assert main([*command, "--backend", "numpy"]) == 0
    expected = capsys.readouterr().out
    assert expected.strip()  # three tokens of (nonsense) text
    assert main([*command, "--backend", "cuda"]) == 0
    assert capsys.readouterr().out == expected

    from refllm import store

    url, engine = refllm_server
    store.create("micro-cuda", f"FROM {path}")  # the server's (temporary) model store
    loaded, _ = engine.load("micro-cuda")
    loaded.model.backend = "cuda"
    body = {"model": "micro-cuda", "prompt": "hello", "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 3, "num_ctx": 16}}  # fmt: skip
    answer = requests.post(url + "/api/generate", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"] == expected.strip()
    running = requests.get(url + "/api/ps", timeout=30).json()["models"]
    assert [m["processor"] for m in running] == ["100% GPU"]


def test_cuda_backend_is_refused_with_a_reason_when_unavailable(monkeypatch):
    from refllm.errors import InvalidRequest
    from refllm.kernels import cuda as cuda_pkg
    from refllm.kernels.reference import get_backend

    monkeypatch.setattr(cuda_pkg, "cuda_status", lambda: (False, "no CUDA driver or GPU found"))
    with pytest.raises(InvalidRequest, match="no CUDA driver"):
        get_backend("cuda")


def test_plan_names_the_cuda_backend_and_its_state(micro_model, monkeypatch):
    from refllm.kernels import cuda as cuda_pkg
    from refllm.plan import build_plan

    path = micro_model("llama", "Q8_0")
    plan = build_plan(path, backend="cuda")  # the simulator counts as available here
    assert (plan.support_level, plan.specialization) == ("optimized", "numba-cuda")
    assert set(op.backend for op in plan.ops.values()) == {"cuda"}
    assert plan.cuda["available"] is True

    monkeypatch.setattr(cuda_pkg, "cuda_status", lambda: (False, "no CUDA driver or GPU found"))
    refused = build_plan(path, backend="cuda")
    assert refused.support_level == "unsupported"
    assert "no CUDA driver" in refused.reason
    assert build_plan(path).cuda == {"available": False, "reason": "no CUDA driver or GPU found"}


def test_plan_falls_back_per_weight_type_without_a_cuda_kernel(tiny_model):
    from refllm.plan import build_plan

    plan = build_plan(tiny_model("llama", "IQ4_NL"), backend="cuda")
    assert plan.quant_types["IQ4_NL"].backend == "numpy"
    assert "no CUDA kernel for IQ4_NL" in plan.quant_types["IQ4_NL"].fallback_reason
    assert plan.support_level == "generic"


def test_run_with_cuda_runs_on_a_gpu_and_explains_itself_elsewhere(micro_model):
    """A real process, without the simulator: a GPU answers, no GPU is a one-line error."""
    import subprocess

    path = micro_model("llama", "Q8_0")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run(
        [sys.executable, "-m", "refllm", "run", str(path), "hi", "--backend", "cuda", "-n", "2", "--seed", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in done.stderr
    if os.path.exists("/dev/nvidiactl"):
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1
        assert "backend 'cuda' is not available here" in done.stderr
