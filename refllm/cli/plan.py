"""``refllm plan``, ``refllm doctor`` and ``refllm bench``.

    refllm plan MODEL [--json] [--backend numpy|numba|cuda] [--no-specialization] [--num-ctx N] [--threads N]
        how MODEL would run (support level, backend per op and per weight type,
        threads, context, memory), resolved without running it
    refllm doctor [--json]
        the environment the kernels run on (CPU, SIMD, Numba, cache, CUDA)
    refllm bench MODEL [--prompt-tokens 128] [--gen-tokens 32] [--threads N ...] [--rounds 3] [--json]
        prefill and decode tokens/s, time to first token and peak RSS, each
        round in a fresh process; medians over the rounds
"""

from __future__ import annotations

import json
import statistics

from refllm.errors import InvalidRequest
from refllm.plan import BACKENDS


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="show how a model would run (backend per op, memory), without running it")
    p.add_argument("model", help="a .gguf path or a model name")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--backend", choices=BACKENDS, help='force a backend (default: runtime.device\'s: numba for "cpu", cuda for "cuda")')
    p.add_argument("--no-specialization", action="store_true", help="prefer the generic NumPy reference path")
    p.add_argument("--num-ctx", type=int, dest="num_ctx", help="context window in tokens (default 4096, at most the model's)")
    p.add_argument("--threads", type=int, help="CPU threads for the kernels")
    p.set_defaults(func=plan_command)

    p = subparsers.add_parser("doctor", help="report the environment: CPU, SIMD, Numba, kernel cache, CUDA")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-m", "--model", help="also plan this model (default with the flags below: the config's runtime.model_reference)")
    p.add_argument("--backend", choices=BACKENDS, help="plan the model on this backend")
    p.add_argument("--no-specialization", action="store_true", help="plan the generic NumPy reference path")
    p.add_argument("--plan-json", action="store_true", help="print the model's runtime plan as JSON and exit")
    p.set_defaults(func=doctor_command)

    p = subparsers.add_parser("bench", help="measure prefill/decode tokens per second on a model")
    p.add_argument("model", help="a .gguf path or a model name")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length for the prefill (default 128)")
    p.add_argument("--gen-tokens", type=int, default=32, help="decode steps (default 32)")
    p.add_argument("--threads", type=int, action="append", help="thread count; repeat to compare (default: all cores)")
    p.add_argument("--rounds", type=int, default=3, help="fresh-process rounds per thread count (default 3)")
    p.add_argument("--backend", choices=BACKENDS, default="numba")
    p.add_argument("--json", action="store_true", help="print every round as JSON lines")
    p.set_defaults(func=bench_command)


def plan_exit_code(support_level: str) -> int:
    """1 when no backend can run the model, else 0: ``refllm plan``'s exit code, and every
    ``--plan-json``'s (run, prompt, chat, doctor, models info), with the plan printed all the same."""
    return 1 if support_level == "unsupported" else 0


def plan_command(args) -> int:
    from refllm.plan import build_plan, format_plan

    if args.threads is not None and args.threads <= 0:
        raise InvalidRequest("--threads must be a positive number")
    plan = build_plan(args.model, backend=args.backend, no_specialization=args.no_specialization, num_ctx=args.num_ctx, threads=args.threads)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return plan_exit_code(plan.support_level)


def doctor_command(args) -> int:
    from refllm.config import load_settings
    from refllm.kernels.environment import environment_report, format_environment

    report = environment_report()
    report["settings"] = load_settings().to_dict(with_sources=True)  # each value and where it came from
    if args.model or args.backend or args.no_specialization or args.plan_json:  # the runtime plan too (oLLM's doctor)
        from refllm.cli.run import _default_model_name
        from refllm.engine.sessions import execution_metadata
        from refllm.plan import build_plan

        plan = build_plan(args.model or _default_model_name(), backend=args.backend, no_specialization=args.no_specialization)
        if args.plan_json:
            print(json.dumps(plan.to_dict(), indent=2))
            return plan_exit_code(plan.support_level)
        report["runtime_plan"] = {"model": plan.model, **execution_metadata(plan)}
    print(json.dumps(report, indent=2) if args.json else format_environment(report))
    if not args.json:  # the settings that are not defaults, and where each came from
        changed = [f"{section}.{key}={entry['value']} ({entry['source']})"
                   for section, values in report["settings"].items() for key, entry in values.items() if entry["source"] != "default"]
        print("settings       " + (", ".join(changed) if changed else "all defaults"))
    if not args.json and "runtime_plan" in report:
        plan_report = report["runtime_plan"]
        print(f"runtime plan   {plan_report['model']}: {plan_report['support_level']} on {plan_report['backend']}"
              + (f" (fallback: {plan_report['fallback_reason']})" if plan_report["fallback_reason"] else ""))
    return 0


def bench_command(args) -> int:
    import os

    from refllm.kernels.speed import measure_in_subprocess
    from refllm.model.loaded import resolve_model_path

    if args.prompt_tokens <= 0 or args.gen_tokens < 0 or args.rounds <= 0:
        raise InvalidRequest("--prompt-tokens and --rounds must be positive, --gen-tokens not negative")
    path = resolve_model_path(args.model)  # a clear error now, not in a child process
    thread_counts = args.threads or [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]
    if any(t <= 0 for t in thread_counts):
        raise InvalidRequest("--threads must be positive")
    results = {t: [] for t in thread_counts}
    for _ in range(args.rounds):
        for threads in thread_counts:  # interleaved, so a noisy moment hits every setting alike
            result = measure_in_subprocess(path, args.prompt_tokens, args.gen_tokens, threads, args.backend)
            results[threads].append(result)
            if args.json:
                print(json.dumps(result.to_dict()), flush=True)
    if not args.json:
        print(f"{args.model}: {args.prompt_tokens}-token prompt, {args.gen_tokens} decode steps, backend {args.backend}, "
              f"medians of {args.rounds} rounds")  # fmt: skip
        print(f"{'threads':>7} {'prefill tok/s':>14} {'decode tok/s':>13} {'TTFT s':>7} {'load s':>7} {'peak RSS MB':>12}")
        for threads, rounds in results.items():
            med = lambda key: statistics.median(getattr(r, key) for r in rounds)  # noqa: E731
            print(f"{threads:>7} {med('prefill_tok_s'):>14.1f} {med('decode_tok_s'):>13.1f} {med('ttft_s'):>7.2f} "
                  f"{med('load_s'):>7.2f} {med('peak_rss_mb'):>12.0f}")  # fmt: skip
    return 0
