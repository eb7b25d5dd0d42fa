"""Score llama.cpp against refllm with ``refllm conformance`` (needs the ``reference`` extra).

    python tools/conformance_vs_llamacpp.py                       # both real models, llama.cpp's /completion
    python tools/conformance_vs_llamacpp.py smollm2 --api openai  # its /v1/completions instead
    python tools/conformance_vs_llamacpp.py gemma3 -- --prompts prose-story,code-c --n-predict 16

xllamacpp starts llama.cpp's own HTTP server in this process, on 127.0.0.1 (a free port, CPU
only); then ``refllm conformance MODEL --endpoint URL`` runs against it, numeric checks and
tokenizer checks, followed (with --api-only) by the API checks on the same server; the exit code is
the worst of them. Arguments after ``--`` go to ``refllm conformance``.

Measured (xllamacpp 2026.10.11549, suite v1, --context 1024 --n-predict 32, top-20, llamacpp API):

    SmolLM2 Q4_1    351 positions  top-1 99.72% (exact 97.15%)  mean KL 0.00279  p99 0.0219  PASS
    Gemma 3 Q4_K_M  384 positions  top-1 98.70% (exact 97.40%)  mean KL 0.00436  p99 0.0290  FAIL (top-1)
    tokenizer: 636/636 golden texts tokenize and detokenize the same on both models
    --api-only: 6/7 OpenAI checks pass (no Ollama API); "unknown model -> 404" fails: llama.cpp's
    server answers any model name with its one model (SmolLM2, 2026-11-22)

Gemma's five top-1 disagreements beyond the 0.1-nat margin: prose-facts, multi-french, multi-german
and two in multi-japanese (the widest, 0.52 nats). llama.cpp rounds activations to 8 bits in its
quantized dot products, the likely source; llama.cpp vs HF on golden/logits spreads as widely
(refllm/conformance/report.py).

    python tools/conformance_vs_llamacpp.py --record golden/conformance/smollm2.llamacpp.json

records llama.cpp's /completion replies for two suite prompts on SmolLM2 instead; the CI test
(tests/test_conformance.py) replays them to score llama.cpp's numbers without the extra.
"""

from __future__ import annotations

import argparse
import sys

from refllm import packaged_models
from refllm.cli.main import main as refllm_main

MODELS = {"smollm2": packaged_models.smollm2_path, "gemma3": packaged_models.gemma3_path}


def start_llamacpp(path, n_ctx: int, threads: int):
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.n_gpu_layers = 0
    params.warmup = False
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # any free port
    server = xllamacpp.Server(params)
    return server, server.listening_address.rstrip("/")


RECORDED_PROMPTS = ["prose-story", "multi-japanese"]
RECORDED_N_PREDICT, RECORDED_TOP_K = 8, 5


def record(path: str, threads: int) -> int:
    """llama.cpp's /completion replies, exactly as refllm.conformance.remote asks, for a replay in CI."""
    import json
    from importlib import metadata
    from pathlib import Path

    from refllm.conformance.remote import post_json
    from refllm.conformance.suite import load_suite

    texts = {p["id"]: p["text"] for p in load_suite("v1")[1]}
    server, url = start_llamacpp(MODELS["smollm2"](), 512, threads)
    replies = []
    for name in RECORDED_PROMPTS:
        body = {"prompt": texts[name], "n_predict": RECORDED_N_PREDICT, "temperature": 0, "seed": 0, "repeat_penalty": 1.0,
                "n_probs": RECORDED_TOP_K, "return_tokens": True, "cache_prompt": False}  # fmt: skip
        reply = post_json(url + "/completion", body)
        keep = ("content", "tokens", "tokens_evaluated", "completion_probabilities")
        replies.append({"prompt_id": name, "request": body, "reply": {k: reply[k] for k in keep}})
    del server
    out = {"model": "smollm2", "gguf": MODELS["smollm2"]().name, "reference": f"llama.cpp via xllamacpp {metadata.version('xllamacpp')}",
           "command": "python tools/conformance_vs_llamacpp.py --record " + path, "replies": replies}  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), help="smollm2 and/or gemma3 (default: both)")
    parser.add_argument("--api", default="llamacpp", choices=("llamacpp", "openai"))
    parser.add_argument("--n-ctx", type=int, default=4096, help="llama.cpp's context (>= --context + --n-predict)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--api-only", action="store_true", help="also run the API checks against llama.cpp")
    parser.add_argument("--record", metavar="JSON", help="record llama.cpp's replies for the CI test instead")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    if args.record:
        return record(args.record, args.threads)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    worst = 0
    for name in args.models:
        server, url = start_llamacpp(MODELS[name](), args.n_ctx, args.threads)
        print(f"== {name}: llama.cpp at {url}, {args.api} API", flush=True)
        worst = max(worst, refllm_main(["conformance", name, "--endpoint", url, "--api", args.api, *extra]))
        if args.api_only:
            worst = max(worst, refllm_main(["conformance", "--api-only", url, "--endpoint-model", name]))
        del server
    return worst


if __name__ == "__main__":
    sys.exit(main())
