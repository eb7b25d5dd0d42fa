"""Prove the tiny models are valid GGUF: load each one in llama.cpp and evaluate a few tokens.

    python tools/check_tiny_models_llamacpp.py [OUTDIR] [--arch ...] [--types ...]

Needs the ``reference`` extra (``xllamacpp``; ``llama_cpp`` from llama-cpp-python is
used too when installed).  Every model is checked in its own subprocess, because
llama.cpp aborts the whole process on some errors.  A model passes when

* xllamacpp's in-process server loads it and greedily completes 4 tokens from a
  tokenized prompt with finite log-probabilities, and
* (if llama_cpp is importable) llama.cpp evaluates the prompt, every logit is finite, and the
  logits agree (mean KL below 0.01 nats) with llama.cpp's logits for an F32 "twin": the same
  model with every tensor dequantized by gguf-py.  That proves llama.cpp reads the random
  blocks exactly as gguf-py decodes them; what is left is llama.cpp quantizing activations
  (to Q8_0/Q8_K) inside its quantized dot products.

Prints one line per (arch, type) and a summary table; exit code 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(1, str(TOOLS.parent))  # refllm, from a checkout that is not pip-installed
from make_tiny_models import ARCHITECTURES, WEIGHT_TYPES, tiny_model_filename, write_tiny_model  # noqa: E402

PROMPT = "Hello world, this is a test of the tiny model."


def check_with_xllamacpp(path: Path) -> str:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 64
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.warmup = False
    server = xllamacpp.Server(params)
    reply = server.handle_completions({"prompt": PROMPT, "n_predict": 4, "temperature": 0, "n_probs": 1, "ignore_eos": True})
    if "error" in reply:
        raise RuntimeError(f"xllamacpp: {reply['error']}")
    content = reply["choices"][0]["logprobs"]["content"]
    logprobs = [token["logprob"] for token in content]  # tokens ending mid-UTF-8 are merged into the next
    if reply["usage"]["completion_tokens"] != 4 or not logprobs or not all(math.isfinite(lp) for lp in logprobs):
        raise RuntimeError(f"xllamacpp: bad completion {reply['usage']} {logprobs}")
    return f"xllamacpp ok ({' '.join(str(t['id']) for t in content)})"


def llama_cpp_logits(path: Path):
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    llm.eval(tokens)
    return np.asarray(llm.scores[: len(tokens)], dtype=np.float64)  # [n_tokens, n_vocab]


def write_f32_twin(source: Path, target: Path) -> Path:
    """The same model with every tensor dequantized to F32 by gguf-py."""
    import gguf
    import numpy as np

    from make_tiny_models import CONFIGS, add_hyperparameters, add_tokenizer
    from refllm.gguf import read

    model = read(source)
    arch = model.architecture
    writer = gguf.GGUFWriter(target, arch)
    add_hyperparameters(writer, CONFIGS[arch], "F32")
    add_tokenizer(writer, arch)
    for name, t in model.tensors.items():
        rows = t.raw.reshape(t.shape[0], -1) if len(t.shape) == 2 else t.raw  # [rows, bytes per row]
        values = gguf.quants.dequantize(rows, t.ggml_type).reshape(t.shape)
        writer.add_tensor(name, np.ascontiguousarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def mean_kl(p_logits, q_logits) -> float:
    """Mean over positions of KL(softmax(p) || softmax(q)), in nats."""
    import numpy as np

    log_p = p_logits - p_logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    log_q = q_logits - q_logits.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


def check_with_llama_cpp(path: Path) -> str:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama_cpp not installed"
    import numpy as np

    logits = llama_cpp_logits(path)
    if not np.isfinite(logits).all():
        raise RuntimeError("llama_cpp: non-finite logits")
    with tempfile.TemporaryDirectory() as tmp:
        twin_logits = llama_cpp_logits(write_f32_twin(path, Path(tmp) / "twin.gguf"))
    kl = mean_kl(twin_logits, logits)
    if not kl < 0.01:
        raise RuntimeError(f"llama_cpp: logits differ from the gguf-py-dequantized F32 twin (KL {kl:.4f} nats)")
    return f"llama_cpp ok (logit std {logits.std():.3f}, KL vs F32 twin {kl:.5f} nats)"


def check_one(path: Path) -> int:
    """Run in a child process: print a JSON verdict for one model."""
    try:
        notes = [check_with_xllamacpp(path), check_with_llama_cpp(path)]
        print(json.dumps({"ok": True, "notes": notes}))
    except Exception as e:  # report any failure of the engine as a verdict, not a crash
        print(json.dumps({"ok": False, "notes": [f"{type(e).__name__}: {e}"]}))
    return 0


def check_in_subprocess(path: Path) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(path)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return False, "timed out"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            verdict = json.loads(line)
            return verdict["ok"], "; ".join(verdict["notes"])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return False, f"crashed (exit {done.returncode}): {tail[:200]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, nargs="?", help="where to write the models (default: a temp dir)")
    parser.add_argument("--arch", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--types", nargs="+", default=list(WEIGHT_TYPES), choices=WEIGHT_TYPES, metavar="TYPE")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return check_one(args.one)

    outdir = args.outdir or Path(tempfile.mkdtemp(prefix="tiny-models-"))
    failed = []
    table: dict[str, dict[str, str]] = {}
    for arch in args.arch:
        for qtype in args.types:
            path = write_tiny_model(outdir / tiny_model_filename(arch, qtype), arch, qtype)
            ok, notes = check_in_subprocess(path)
            table.setdefault(qtype, {})[arch] = "ok" if ok else "FAIL"
            print(f"{'ok  ' if ok else 'FAIL'} {arch:7s} {qtype:8s} {notes}", flush=True)
            if not ok:
                failed.append((arch, qtype))

    print("\n| type | " + " | ".join(args.arch) + " |")
    print("| --- | " + " | ".join("---" for _ in args.arch) + " |")
    for qtype, row in table.items():
        print(f"| {qtype} | " + " | ".join(row.get(a, "") for a in args.arch) + " |")
    print(f"\n{len(failed)} of {len(args.arch) * len(args.types)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
