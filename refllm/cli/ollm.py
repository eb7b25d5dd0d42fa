"""The oLLM-style commands, thin layers over ``refllm run``'s code and the runtime plan.

    refllm prompt "List planets"                  one answer, streamed (scripts and pipes welcome)
    echo "text" | refllm prompt "Summarize:"      stdin first, then the words (as refllm run does)
    refllm prompt --json "Hi"                     the answer with its metadata as one JSON object
    refllm chat [--model smollm2]                 the interactive chat of refllm run (a terminal only)
    refllm models list [--installed] [--json]     built-in and discovered-local references, with availability
    refllm models info smollm2 [--json]           one reference with its runtime plan (nothing is loaded)

Runtime controls, honoured by ``prompt``, ``chat``, ``models info`` (and ``refllm doctor``):
    --backend numpy|numba|cuda  force a backend
    --no-specialization         prefer the generic NumPy path
    --plan-json                 print the resolved runtime plan and exit without generating

The answer's metadata names the backend, support level, applied kernels and any fallback reason
(``refllm.engine.sessions.execution_metadata``), the same fields ``/v1/prompt`` returns.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from refllm.cli.plan import plan_exit_code
from refllm.cli.run import (Chat, Spinner, _default_model_name, _load, add_generation_arguments, model_recipe,
                            option_values, options_from_args, prompt_from, stream_answer)
from refllm.errors import InvalidRequest, UnsupportedModel
from refllm.plan import BACKENDS


def register(subparsers) -> None:
    p = subparsers.add_parser("prompt", help="answer one prompt (for scripts and pipes; --json for metadata)",
                              description="Answer PROMPT (and/or text piped on stdin) once, then exit.")
    p.add_argument("prompt", nargs="*", help="the prompt; stdin, when piped, comes first")
    p.add_argument("--json", action="store_true", help="print the response and its metadata as JSON")
    _add_model_arguments(p)
    add_generation_arguments(p)
    p.set_defaults(func=prompt_command)

    p = subparsers.add_parser("chat", help="interactive chat (a terminal only; use `prompt` in scripts)",
                              description="Chat with a model on a terminal (the chat of `refllm run MODEL`).")
    _add_model_arguments(p)
    add_generation_arguments(p)
    p.add_argument("--verbose", action="store_true", help="print timings after each answer")
    p.set_defaults(func=chat_command)

    p = subparsers.add_parser("models", help="model references: built-in catalog and local store (list, info)")
    sub = p.add_subparsers(dest="models_command", metavar="list|info", required=True)
    q = sub.add_parser("list", help="built-in and discovered-local references with their availability")
    q.add_argument("--installed", action="store_true", help="only materialized references (ready to load)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=models_list_command)
    q = sub.add_parser("info", help="one reference with its runtime plan (nothing is loaded)")
    q.add_argument("reference", help="a catalog or store name, or a .gguf path")
    q.add_argument("--json", action="store_true", help="print JSON")
    _add_runtime_controls(q)
    q.set_defaults(func=models_info_command)


def _add_runtime_controls(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, help='force a backend (default: runtime.device\'s: numba for "cpu", cuda for "cuda")')
    p.add_argument("--no-specialization", action="store_true", help="prefer the generic NumPy reference path")
    p.add_argument("--plan-json", action="store_true", help="print the resolved runtime plan as JSON and exit")


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="a model reference (default: the config's runtime.model_reference)")
    p.add_argument("--system", help="system message")
    _add_runtime_controls(p)


# --------------------------------------------------------------------------- prompt and chat


def _plan(name: str, args):
    """The runtime plan the command will follow; ``--plan-json`` prints it (the caller then exits)."""
    from refllm.plan import build_plan

    plan = build_plan(name, backend=args.backend, no_specialization=args.no_specialization, num_ctx=getattr(args, "num_ctx", None))
    if args.plan_json:
        print(json.dumps(plan.to_dict(), indent=2))
    elif plan.support_level == "unsupported":
        raise UnsupportedModel(f"{name} cannot run here: {plan.reason}")
    return plan


def _load_planned(name: str, plan, recipe):
    with Spinner(sys.stderr, f"loading {name}"):
        started = time.perf_counter_ns()
        model = _load(recipe, plan.backend)
        return model, time.perf_counter_ns() - started


def prompt_command(args: argparse.Namespace) -> int:
    from refllm.engine.sessions import execution_metadata

    name = args.model or _default_model_name()
    plan = _plan(name, args)
    if args.plan_json:
        return plan_exit_code(plan.support_level)
    recipe = model_recipe(name)
    options = options_from_args(args, defaults=recipe.params)
    system = args.system if args.system is not None else recipe.system
    text = prompt_from(args.prompt, sys.stdin)
    if text is None or not text.strip():
        raise InvalidRequest('nothing to answer: give a prompt (refllm prompt "...") or pipe one on stdin')
    prompt = [*recipe.messages, {"role": "user", "content": text}] if recipe.messages else text
    model, load_ns = _load_planned(name, plan, recipe)
    if not args.json:
        stream_answer(model, prompt, options, system=system)
        return 0
    result = model.generate(prompt, system=system, options=options)
    print(json.dumps({
        "model": model.name, "response": result.text, "done_reason": result.done_reason,
        "usage": {"prompt_tokens": len(result.prompt_tokens), "completion_tokens": result.eval_count},
        "timings": {"load_duration": load_ns + result.load_duration, "prompt_eval_duration": result.prompt_eval_duration,
                    "eval_duration": result.eval_duration, "total_duration": load_ns + result.total_duration},
        "metadata": execution_metadata(plan),
    }, indent=2, ensure_ascii=False))
    return 0


def chat_command(args: argparse.Namespace) -> int:
    name = args.model or _default_model_name()
    plan = _plan(name, args)
    if args.plan_json:
        return plan_exit_code(plan.support_level)
    if not sys.stdin.isatty():
        raise InvalidRequest('refllm chat needs an interactive terminal; in scripts and pipes use: refllm prompt "..."')
    recipe = model_recipe(name)
    options = options_from_args(args, defaults=recipe.params)
    model, _ = _load_planned(name, plan, recipe)
    chat = Chat(model, options, system=args.system if args.system is not None else recipe.system, verbose=args.verbose,
                recipe=recipe, user_options=option_values(args))
    return chat.loop()


# --------------------------------------------------------------------------- models


def models_list_command(args: argparse.Namespace) -> int:
    from refllm.discovery import list_references

    entries = list_references(installed_only=args.installed)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{'REFERENCE':<28}{'KIND':<18}{'AVAILABILITY':<18}DESCRIPTION")
    for e in entries:
        print(f"{e['reference']:<28}{e['kind']:<18}{e['availability']:<18}{e['description']}")
    return 0


def models_info_command(args: argparse.Namespace) -> int:
    from refllm.discovery import reference_info
    from refllm.plan import format_plan

    info = reference_info(args.reference, backend=args.backend, no_specialization=args.no_specialization)
    if args.plan_json:
        print(json.dumps(info["plan"], indent=2))
        return plan_exit_code(info["support_level"]) if info["plan"] else 1
    if args.json:
        print(json.dumps(info, indent=2))
        return plan_exit_code(info["support_level"]) if info["plan"] else 0
    print(f"reference      {info['reference']}  ({info['kind']}, {info['availability']})")
    if info["plan"] is None:
        print(f"install        {info['install_hint']}")
        return 0
    from refllm.plan import build_plan

    plan = build_plan(info["resolved"]["path"], backend=args.backend, no_specialization=args.no_specialization)
    plan.model = info["resolved"]["name"]
    print(format_plan(plan))
    print(f"kernels        {', '.join(info['runtime']['applied_kernels'])}")
    return plan_exit_code(plan.support_level)
