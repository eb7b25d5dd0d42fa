"""``refllm conformance``: score another runtime's numbers (or its API) against refllm.

    refllm conformance smollm2 --endpoint http://127.0.0.1:11434 --api ollama
    refllm conformance smollm2 --endpoint http://127.0.0.1:8080 --api llamacpp --json
    refllm conformance --api-only http://127.0.0.1:11434

Exit code 0 when every threshold holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

from refllm.errors import InvalidRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "conformance", help="score another runtime (Ollama/OpenAI/llama.cpp API) against refllm",
        description="Send refllm's fixed prompt suite, raw, to another runtime; compare its top-k logprobs at every "
                    "generated position with refllm's (KL over the shared support, top-1 agreement, rank, first "
                    "greedy divergence). With --api-only: check a server's API shapes instead.",
    )  # fmt: skip
    p.add_argument("model", nargs="?", help="the model refllm runs as the reference (a name or a .gguf path)")
    p.add_argument("--endpoint", metavar="URL", help="the other runtime's base URL, e.g. http://127.0.0.1:11434 (an OpenAI client's .../v1 works too)")
    p.add_argument("--api", choices=("ollama", "openai", "llamacpp"), default="ollama",
                   help="how to ask it: Ollama /api/generate, OpenAI /v1/completions or llama.cpp /completion")
    p.add_argument("--endpoint-model", metavar="NAME", help="the model's name on the other side (default: MODEL)")
    p.add_argument("--api-only", metavar="URL", help="only check the API of the server at URL (no MODEL needed)")
    p.add_argument("--suite", default="v1", help="prompt suite: a shipped name (v1) or a .json file")
    p.add_argument("--prompts", metavar="IDS", help="comma-separated prompt ids to run (default: all)")
    p.add_argument("--n-predict", type=int, default=32, help="tokens generated per prompt (default 32)")
    p.add_argument("--top-k", type=int, default=20, help="alternatives asked for at each position (default 20)")
    p.add_argument("--context", type=int, default=2048,
                   help="tokens in the long-context prompt (default 2048; capped by the model's window)")
    p.add_argument("--min-top1", type=float, default=0.99, help="pass threshold: top-1 agreement (default 0.99)")
    p.add_argument("--max-kl", type=float, default=0.01, help="pass threshold: mean KL in nats (default 0.01)")
    p.add_argument("--tie-margin", type=float, default=0.1,
                   help="a top-1 disagreement within this many nats in refllm's distribution is a tie (default 0.1)")
    p.add_argument("--backend", help="refllm's compute backend (numpy, numba, cuda)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="a table of every position of every prompt")
    p.set_defaults(func=run)


def check_url(url: str, flag: str) -> None:
    """An http(s) URL with a host, or InvalidRequest naming the flag (not urllib's traceback later)."""
    parts = urllib.parse.urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(f"{flag} must be an http(s) URL such as http://127.0.0.1:11434, got '{url}'")


def run(args: argparse.Namespace) -> int:
    if args.api_only:
        check_url(args.api_only, "--api-only")
        return run_api_only(args)
    if not args.model or not args.endpoint:
        raise InvalidRequest("give MODEL and --endpoint URL (or --api-only URL)")
    check_url(args.endpoint, "--endpoint")
    if not 1 <= args.n_predict <= 4096 or not 1 <= args.top_k <= 20:
        raise InvalidRequest("--n-predict must be 1..4096 and --top-k 1..20")

    import refllm
    from refllm.cli.store import ProgressBar
    from refllm.conformance.numeric import run_numeric
    from refllm.conformance.remote import Remote
    from refllm.conformance.report import Thresholds, as_json, print_report, summarize
    from refllm.conformance.suite import build_prompts, load_suite
    from refllm.conformance.tokens import check_tokenizer, golden_texts

    version, entries = load_suite(args.suite)
    remote = Remote(args.endpoint, args.api, args.endpoint_model or args.model)
    remote.probe()  # before loading refllm's model: a wrong URL fails in a second
    model = refllm.load(args.model)
    if args.backend:
        from refllm.kernels.reference import get_backend

        get_backend(args.backend)
        model.backend = args.backend
    context = max(16, min(args.context, model.n_ctx_train - args.n_predict))
    only = [name.strip() for name in args.prompts.split(",")] if args.prompts else None
    prompts = build_prompts(entries, lambda text: model.tokenize(text, add_special=True, parse_special=True), context, only)

    bar = ProgressBar()
    try:
        scores = run_numeric(model, remote, prompts, args.n_predict, args.top_k, context + args.n_predict + 16, bar)
    finally:
        bar.close()
    summary = summarize(scores, Thresholds(args.min_top1, args.max_kl, args.tie_margin))
    tokenizer = check_tokenizer(model, remote, golden_texts([p.text for p in prompts]))
    summary["tokenizer"] = tokenizer
    if tokenizer is not None and tokenizer["tokenize_agree"] < tokenizer["texts"]:
        summary["passed"] = False
        summary["failures"].append(f"tokenization differs on {tokenizer['texts'] - tokenizer['tokenize_agree']} texts")
        if tokenizer["tokenize_agree"] == 0:
            summary["failures"].append(f"no text tokenizes the same: does the server run {args.model}?")

    if args.json:
        json.dump(as_json(version, args.model, remote.url, args.api, scores, summary), sys.stdout, indent=1, default=str)
        print()
    else:
        print(f"suite {version}, model {args.model}, {args.api} API at {remote.url}")
        print()
        print_report(scores, summary, verbose=args.verbose)
        if tokenizer is not None:
            print(f"tokenizer: {tokenizer['tokenize_agree']}/{tokenizer['texts']} texts tokenize the same, "
                  f"{tokenizer['detokenize_agree']}/{tokenizer['texts']} detokenize the same")  # fmt: skip
            for m in tokenizer["mismatches"]:
                print(f"  differs: {m}")
    return 0 if summary["passed"] else 1


def model_note(model: str | None, asked: str | None) -> str:
    if model is None:
        return "no model to ask (none given, none listed; give --endpoint-model)"
    return f"model {model!r}" + ("" if asked else " (the first the server lists; --endpoint-model to choose)")


def run_api_only(args: argparse.Namespace) -> int:
    from refllm.conformance.api_checks import check_api

    from refllm.conformance.remote import base_url

    model, results = check_api(args.api_only, model=args.endpoint_model or args.model)
    if args.json:
        json.dump([r.__dict__ for r in results], sys.stdout, indent=1)
        print()
    else:
        print(f"API checks of {base_url(args.api_only)}, {model_note(model, args.endpoint_model or args.model)}")
        for r in results:
            verdict = "SKIP" if r.skipped else "PASS" if r.passed else "FAIL"
            print(f"{verdict}  {r.api:<7} {r.name}" + ("" if r.passed and not r.skipped else f": {r.detail}"))
        ran = [r for r in results if not r.skipped]
        print(f"{sum(r.passed for r in ran)}/{len(ran)} checks pass")
    return 0 if all(r.passed for r in results) else 1
