"""Measure refllm's speed on a model: prefill and decode tokens/s, time to first token, peak RSS.

Used by ``refllm bench MODEL`` and by ``tools/bench_vs_llamacpp.py`` (which runs
llama.cpp the same way on the same GGUF).  The workload is fixed so runs compare:

    prompt  ``n_prompt`` tokens (a fixed English text, tokenized, repeated to length)
    prefill one forward call over the whole prompt -> logits of the last position
    decode  ``n_gen`` forward calls of one token each (the ids are the prompt's again:
            the cost of a step does not depend on which token it is)

Time to first token = prefill + picking the token.  Peak RSS is the process's
high-water mark (``ru_maxrss``) at the end.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

PROMPT_TEXT = (
    "The history of computing is a story of people who wanted to calculate faster than they could by hand. "
    "Early machines used gears and levers; later ones used relays, vacuum tubes and finally transistors. "
)


@dataclass
class SpeedResult:
    engine: str
    model: str
    backend: str
    threads: int
    n_prompt: int
    n_gen: int
    load_s: float  # open the model + compile or load the kernels
    prefill_s: float
    prefill_tok_s: float
    decode_tok_s: float  # median over the decode steps
    ttft_s: float
    peak_rss_mb: float

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_ids(model, n_prompt: int) -> list[int]:
    ids = model.tokenize(PROMPT_TEXT, add_special=False)
    return (ids * (n_prompt // len(ids) + 1))[:n_prompt]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def set_threads(threads: int | None) -> int:
    """Numba's thread count.  (BLAS reads OPENBLAS_NUM_THREADS at start-up: ``refllm bench``
    and tools/bench_vs_llamacpp.py run each measurement in a fresh process with both set.)"""
    from refllm.kernels.numba_backend import set_threads as set_kernel_threads

    return set_kernel_threads(threads)


def measure_in_subprocess(model_ref, n_prompt: int, n_gen: int, threads: int, backend: str = "numba", timeout: float = 900) -> SpeedResult:
    """``measure`` in a fresh Python process with NUMBA_NUM_THREADS and BLAS threads = ``threads``."""
    import json
    import os
    import subprocess

    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "refllm.kernels.speed", str(model_ref), str(n_prompt), str(n_gen), str(threads), backend]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        from refllm.errors import RefllmError

        raise RefllmError(f"benchmark process failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return SpeedResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure(model_ref, n_prompt: int = 128, n_gen: int = 32, threads: int | None = None, backend: str = "numba") -> SpeedResult:
    """Load ``model_ref`` (path or name), then time one prefill and ``n_gen`` decode steps."""
    import refllm

    start = time.perf_counter()
    model = refllm.load(model_ref)
    model.backend = backend
    used_threads = set_threads(threads) if backend == "numba" else 1
    if backend == "numba":
        from refllm.kernels.numba_backend import warm_up

        warm_up({info.ggml_type for info in model.gguf.tensors.values()})
    ids = prompt_ids(model, n_prompt)
    cache = model.new_cache(n_prompt + n_gen + 1)
    load_s = time.perf_counter() - start

    t0 = time.perf_counter()
    logits = model.forward(np.array(ids), cache)  # [n_vocab], last position
    int(np.argmax(logits))
    prefill_s = time.perf_counter() - t0

    steps = []
    for i in range(n_gen):
        t = time.perf_counter()
        logits = model.forward(np.array([ids[i % len(ids)]]), cache)
        int(np.argmax(logits))
        steps.append(time.perf_counter() - t)
    return SpeedResult(
        engine="refllm",
        model=str(model_ref),
        backend=backend,
        threads=used_threads,
        n_prompt=n_prompt,
        n_gen=n_gen,
        load_s=load_s,
        prefill_s=prefill_s,
        prefill_tok_s=n_prompt / prefill_s,
        decode_tok_s=1.0 / float(np.median(steps)) if steps else 0.0,
        ttft_s=prefill_s,
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":  # python -m refllm.kernels.speed MODEL N_PROMPT N_GEN THREADS BACKEND -> one JSON line
    import json

    model_ref, n_prompt, n_gen, threads, backend = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
    print(json.dumps(measure(model_ref, n_prompt, n_gen, threads, backend).to_dict()))
