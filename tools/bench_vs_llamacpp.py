#!/usr/bin/env python
"""refllm vs llama.cpp on the same GGUF, the same prompt, the same thread count.

    python tools/bench_vs_llamacpp.py [MODEL ...] [--threads 1 2] [--rounds 3]
        [--prompt-tokens 128] [--gen-tokens 32] [--json]

MODEL: a .gguf path or a refllm model name (default: smollm2 and gemma3).
llama.cpp runs through llama-cpp-python (installed with the ``reference`` /
``models`` extras).  Each measurement is a fresh process with its thread
count set (NUMBA_NUM_THREADS, OPENBLAS_NUM_THREADS for refllm; n_threads and
n_threads_batch for llama.cpp), and the engines alternate round by round so a
noisy moment on a shared machine hits both.  Printed: medians over the rounds
of prefill and decode tokens/s, the ratio refllm / llama.cpp, time to first
token (prefill of the prompt + picking the first token) and peak RSS.

Workload, identical for both engines: the same token ids (refllm's tokenizer,
``refllm.kernels.speed.prompt_ids``), one prefill call over the whole prompt,
then ``--gen-tokens`` single-token decode steps feeding fixed ids (a step
costs the same whatever the token), context = prompt + generated tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LLAMA_CPP_CHILD = r"""
import json, resource, sys, time
import numpy as np
import llama_cpp
path, threads, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ids = json.loads(sys.stdin.read())
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=len(ids) + n_gen + 8,
                      n_batch=max(512, len(ids)), n_ubatch=max(512, len(ids)), verbose=False)
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
llm.eval(ids)
prefill_s = time.perf_counter() - t0
steps = []
for i in range(n_gen):
    t = time.perf_counter()
    llm.eval([ids[i % len(ids)]])
    steps.append(time.perf_counter() - t)
print(json.dumps(dict(engine="llama.cpp", threads=threads, n_prompt=len(ids), n_gen=n_gen, load_s=load_s,
                      prefill_s=prefill_s, prefill_tok_s=len(ids) / prefill_s,
                      decode_tok_s=1.0 / float(np.median(steps)) if steps else 0.0, ttft_s=prefill_s,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def thread_env(threads: int) -> dict:
    return {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def run_llama_cpp(path: Path, ids: list[int], threads: int, n_gen: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LLAMA_CPP_CHILD, str(path), str(threads), str(n_gen)],
        input=json.dumps(ids), env=thread_env(threads), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"llama.cpp run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_refllm(path: Path, n_prompt: int, threads: int, n_gen: int) -> dict:
    from refllm.kernels.speed import measure_in_subprocess

    return measure_in_subprocess(path, n_prompt, n_gen, threads, "numba").to_dict()


def time_to_first_token_from_start(path: Path, threads: int) -> float:
    """Wall time of a fresh process: start, import, load, warm kernels, 8-token prompt, first token."""
    import time

    code = (
        "import numpy as np, refllm\n"
        "from refllm.kernels.numba_backend import warm_up\n"
        f"m = refllm.load({str(path)!r}); m.backend = 'numba'\n"
        "warm_up({t.ggml_type for t in m.gguf.tensors.values()})\n"
        "ids = m.tokenize('Why is the sky blue?')\n"
        "int(np.argmax(m.forward(np.array(ids), m.new_cache(64))))\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=thread_env(threads), check=True, capture_output=True, timeout=900)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["smollm2", "gemma3"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="also print every measurement as a JSON line")
    args = parser.parse_args(argv)

    import refllm
    from refllm.kernels.speed import prompt_ids

    rows = []
    for model_ref in args.models:
        model = refllm.load(model_ref)
        path = model.path
        label = path.name if Path(model_ref).suffix == ".gguf" else model_ref  # a store model's file is a sha256 blob
        ids = prompt_ids(model, args.prompt_tokens)
        runs: dict[tuple[str, int], list[dict]] = {}
        for _ in range(args.rounds):
            for threads in args.threads:
                for engine in ("refllm", "llama.cpp"):
                    if engine == "refllm":
                        result = run_refllm(path, args.prompt_tokens, threads, args.gen_tokens)
                    else:
                        result = run_llama_cpp(path, ids, threads, args.gen_tokens)
                    runs.setdefault((engine, threads), []).append(result)
                    if args.json:
                        print(json.dumps({"model": label, **result}), flush=True)
        for threads in args.threads:
            med = {e: {k: statistics.median(r[k] for r in runs[(e, threads)]) for k in ("prefill_tok_s", "decode_tok_s", "ttft_s", "peak_rss_mb")}
                   for e in ("refllm", "llama.cpp")}  # fmt: skip
            start_ttft = time_to_first_token_from_start(path, threads)
            rows.append((label, threads, med, start_ttft, path.stat().st_size / 2**20))

    print(f"\nmedians of {args.rounds} interleaved rounds; {args.prompt_tokens}-token prompt, {args.gen_tokens} decode steps")
    header = f"{'model':38} {'thr':>3} {'prefill tok/s r/l':>20} {'ratio':>6} {'decode tok/s r/l':>18} {'ratio':>6} {'TTFT s r/l':>12} {'start->1st s':>12} {'RSS MiB r/l (GGUF)':>20}"
    print(header)
    for name, threads, med, start_ttft, gguf_mb in rows:
        r, l = med["refllm"], med["llama.cpp"]
        print(
            f"{name[:38]:38} {threads:>3} {r['prefill_tok_s']:>9.1f}/{l['prefill_tok_s']:<9.1f} {r['prefill_tok_s'] / l['prefill_tok_s']:>6.2f} "
            f"{r['decode_tok_s']:>8.1f}/{l['decode_tok_s']:<8.1f} {r['decode_tok_s'] / l['decode_tok_s']:>6.2f} "
            f"{r['ttft_s']:>5.2f}/{l['ttft_s']:<5.2f} {start_ttft:>12.2f} {r['peak_rss_mb']:>6.0f}/{l['peak_rss_mb']:<5.0f} ({gguf_mb:.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
