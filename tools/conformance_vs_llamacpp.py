"""Score llama.cpp against refllm with ``refllm conformance`` (needs the ``reference`` extra).

    python tools/conformance_vs_llamacpp.py                       # both real models, llama.cpp's /completion
    python tools/conformance_vs_llamacpp.py smollm2 --api openai  # its /v1/completions instead
    python tools/conformance_vs_llamacpp.py gemma3 -- --prompts prose-story,code-c --n-predict 16

xllamacpp starts llama.cpp's own HTTP server in this process, on 127.0.0.1 (a free port, CPU
only); then ``refllm conformance MODEL --endpoint URL`` runs against it, numeric checks and
tokenizer checks, followed by ``--api-only`` on the same server. Arguments after ``--`` go to
``refllm conformance``.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), help="smollm2 and/or gemma3 (default: both)")
    parser.add_argument("--api", default="llamacpp", choices=("llamacpp", "openai"))
    parser.add_argument("--n-ctx", type=int, default=4096, help="llama.cpp's context (>= --context + --n-predict)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--api-only", action="store_true", help="also run the API checks against llama.cpp")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    worst = 0
    for name in args.models:
        server, url = start_llamacpp(MODELS[name](), args.n_ctx, args.threads)
        print(f"== {name}: llama.cpp at {url}, {args.api} API", flush=True)
        worst = max(worst, refllm_main(["conformance", name, "--endpoint", url, "--api", args.api, *extra]))
        if args.api_only:
            refllm_main(["conformance", "--api-only", url, "--endpoint-model", name])
        del server
    return worst


if __name__ == "__main__":
    sys.exit(main())
