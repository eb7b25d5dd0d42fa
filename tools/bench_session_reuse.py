"""Time saved by a server session's KV-cache reuse on a multi-turn conversation.

    python tools/bench_session_reuse.py [--model smollm2] [--turns 10] [--num-predict 16]

1. reuse:  the turns go through ``refllm.engine.sessions.SessionManager`` (what
           ``POST /v1/sessions/{id}/prompt`` runs): each turn evaluates only the new
           message, the rest of the conversation comes from the session's KV cache.
2. fresh:  the same conversation, each turn generated in a new, empty cache (the whole
           transcript prefilled every time, as a stateless client resending it would cost).

Both are greedy, so the answers must be identical (checked); the script prints prompt tokens
evaluated, prefill seconds and wall seconds per mode, and the saving.
"""

from __future__ import annotations

import argparse
import json
import time

QUESTIONS = [
    "What is the largest planet in the solar system?", "How far is it from the Sun?", "What is it made of?",
    "Does it have moons?", "Which one is the biggest?", "Could people live there?", "What about Mars?",
    "How long does it take to get to Mars?", "Who was the first to land a rover there?", "Thanks, summarize our chat.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--num-predict", type=int, default=16)
    args = parser.parse_args()

    from refllm.engine import Engine
    from refllm.engine.response_store import open_records
    from refllm.engine.sessions import SessionManager
    from refllm.generate import Session

    options = {"num_predict": args.num_predict, "temperature": 0, "repeat_penalty": 1.0}
    engine = Engine()
    sessions = SessionManager(engine, open_records("memory"))
    loaded, _ = engine.load(args.model)
    model = loaded.model
    # weights ready and every kernel shape compiled (a batched prefill, a short one, decode steps) before timing
    warm = sessions.create(args.model, options=options)
    for question in QUESTIONS[:2]:
        sessions.prompt(warm["id"], question).collect()
    sessions.delete(warm["id"])

    session = sessions.create(args.model, options=options)
    reuse = {"prompt_tokens_evaluated": 0, "prefill_s": 0.0, "wall_s": 0.0}
    for question in QUESTIONS[: args.turns]:
        started = time.perf_counter()
        finished = sessions.prompt(session["id"], question).collect()
        reuse["wall_s"] += time.perf_counter() - started
        reuse["prompt_tokens_evaluated"] += finished.prompt_eval_count
        reuse["prefill_s"] += finished.prompt_eval_duration / 1e9
        reuse.setdefault("per_turn_wall_s", []).append(round(time.perf_counter() - started, 2))
    transcript = sessions.get(session["id"])["messages"]

    fresh = {"prompt_tokens_evaluated": 0, "prefill_s": 0.0, "wall_s": 0.0}
    for turn in range(args.turns):
        started = time.perf_counter()
        result = model.generate(transcript[: 2 * turn + 1], session=Session(), **options)
        fresh["wall_s"] += time.perf_counter() - started
        fresh["prompt_tokens_evaluated"] += result.prompt_eval_count
        fresh["prefill_s"] += result.prompt_eval_duration / 1e9
        fresh.setdefault("per_turn_wall_s", []).append(round(time.perf_counter() - started, 2))
        assert result.text == transcript[2 * turn + 1]["content"], f"turn {turn + 1}: the cached session answered differently"
    engine.close()

    report = {"model": loaded.name, "backend": model.backend, "turns": args.turns, "num_predict": args.num_predict,
              "final_context_tokens": len(result.prompt_tokens) + len(result.tokens), "reuse": reuse, "fresh": fresh,
              "prefill_saved_s": fresh["prefill_s"] - reuse["prefill_s"], "wall_saved_s": fresh["wall_s"] - reuse["wall_s"],
              "wall_speedup": fresh["wall_s"] / reuse["wall_s"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
