"""Printing conformance results: a table of prompts, details where they diverge, a verdict.

Default thresholds come from the spread measured between llama.cpp and HF transformers on the
same weights: at least 99% top-1 agreement and a mean KL of at most 0.01 nats. A top-1
disagreement counts as agreement when it is a near-tie: refllm's logprobs of the two tokens
within 0.1 nats (the margin tests/test_golden_logits.py allows llama.cpp).

Measured on the golden prompts (golden/logits, llama.cpp vs HF, top-32 shared support):
SmolLM2 Q4_1, 195 positions: top-1 97.4% exact, 99.5% with the tie margin, mean KL 0.0040;
Gemma 3 Q4_K_M, 740 positions: 98.5% exact, 99.05% with the margin, mean KL 0.0020.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from refllm.conformance.numeric import PromptScore, top1_agrees


@dataclass
class Thresholds:
    min_top1: float = 0.99  # fraction of scored positions where both runtimes' top token agree
    max_mean_kl: float = 0.01  # nats, mean over scored positions
    tie_margin: float = 0.1  # nats: a top-1 disagreement this close in refllm's distribution is a tie


def summarize(scores: list[PromptScore], thresholds: Thresholds) -> dict:
    """The verdict over all prompts: pooled top-1 agreement and KL, and the first divergence."""
    scored = [p for s in scores for p in s.scored]
    kls = [p.kl for p in scored if p.kl is not None]
    top1 = sum(top1_agrees(p, thresholds.tie_margin) for p in scored) / len(scored) if scored else math.nan
    exact = sum(bool(p.top1_agrees) for p in scored) / len(scored) if scored else math.nan
    mean_kl = float(np.mean(kls)) if kls else math.nan
    first = next(((s, s.first_divergence) for s in scores if s.first_divergence is not None), None)
    failures = []
    mismatched = [s.id for s in scores if s.prompt_mismatch]
    if mismatched:
        failures.append(f"the server read a different prompt (token count) on {', '.join(mismatched)}")
    if not scored:
        failures.append("no position could be scored")
    if scored and not top1 >= thresholds.min_top1:
        failures.append(f"top-1 agreement {top1:.2%} < {thresholds.min_top1:.2%}")
    if kls and not mean_kl <= thresholds.max_mean_kl:
        failures.append(f"mean KL {mean_kl:.5f} > {thresholds.max_mean_kl}")
    return {
        "passed": not failures, "failures": failures,
        "positions_scored": len(scored), "top1_agreement": top1, "top1_exact": exact, "mean_kl": mean_kl,
        "p99_kl": float(np.percentile(kls, 99)) if kls else math.nan, "max_kl": float(max(kls)) if kls else math.nan,
        "mean_rank": float(np.mean([p.rank for p in scored])) if scored else math.nan,
        "worst_rank": max((p.rank for p in scored), default=0),
        "first_divergence": None if first is None else {"prompt": first[0].id, **asdict(first[1]),
                                                         "context": first[0].context_before_divergence},
        "thresholds": asdict(thresholds),
    }  # fmt: skip


def as_json(suite_version: str, model: str, endpoint: str, api: str, scores: list[PromptScore], summary: dict) -> dict:
    tie_margin = summary["thresholds"]["tie_margin"]
    prompts = []
    for s in scores:
        divergence = s.first_divergence
        prompts.append({
            "id": s.id, "kind": s.kind, "prompt_tokens": s.prompt_tokens, "remote_prompt_tokens": s.remote_prompt_tokens,
            "positions_scored": len(s.scored), "top1_agreement": s.top1_agreement(tie_margin), "mean_kl": s.mean_kl,
            "max_kl": s.max_kl, "first_divergence": None if divergence is None else divergence.position,
            "continuation": s.continuation, "notes": s.notes, "positions": [asdict(p) for p in s.positions],
        })  # fmt: skip
    return {"suite": suite_version, "model": model, "endpoint": endpoint, "api": api, "summary": summary, "prompts": prompts}


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def shown(token: str) -> str:
    r"""A token quoted as repr quotes it, but bytes that are no UTF-8 character, which numeric.py writes as the
    four characters \xNN, stay \xNN (repr alone would show \\xNN)."""
    return repr(token).replace(r"\\x", r"\x")


def _table(header: tuple[str, ...], rows: list[tuple], out) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        out("  ".join(f"{str(cell):<{w}}" for cell, w in zip(row, widths)).rstrip())


def position_table(score: PromptScore, out, around: int | None = None) -> None:
    """One row per generated position; ``around``: only a few rows either side of that position."""
    rows = []
    for p in score.positions:
        if around is not None and abs(p.position - around) > 2:
            continue
        mark = "" if p.greedy_agrees else "  <- diverges"
        rows.append((p.position, shown(p.token), shown(p.refllm_token), _num(p.other_logprob, ".4f"),
                     _num(p.refllm_logprob, ".4f"), p.rank, _num(p.margin, ".3f"), _num(p.kl, ".5f") + mark))  # fmt: skip
    _table(("pos", "other chose", "refllm top", "logprob other", "logprob refllm", "rank", "margin", "KL"), rows, out)


def tie_verdict(p, tie_margin: float) -> str:
    """Why a position where the greedy choices differ does or does not count against top-1 agreement."""
    if p.margin is None:
        return "this position is unscored (its logprobs entry covers several tokens): it counts for nothing"
    if p.top1_agrees:
        return "the other runtime's own top-1 is refllm's: it did not choose greedily here"
    verdict = f"refllm puts it {p.margin:.3f} nats below its top, "
    if p.margin <= tie_margin:
        verdict += f"within --tie-margin {tie_margin:g}: a near-tie, counted as top-1 agreement"
    else:
        verdict += f"beyond --tie-margin {tie_margin:g}: counted as a top-1 disagreement"
    if p.other_margin is None:
        return verdict + "; refllm's top is not in the other runtime's top-k"
    return verdict + f"; the other runtime puts refllm's top {p.other_margin:.3f} nats below its own"


def print_report(scores: list[PromptScore], summary: dict, out=print, verbose: bool = False) -> None:
    """The per-prompt table, details at each prompt's first divergence, then the verdict."""
    tie_margin = summary["thresholds"]["tie_margin"]
    rows = []
    for s in scores:
        d = s.first_divergence
        rows.append((s.id, s.kind, s.prompt_tokens, len(s.scored), _num(s.top1_agreement(tie_margin), ".1%"), _num(s.mean_kl, ".5f"),
                     _num(s.max_kl, ".5f"), "-" if d is None else d.position))  # fmt: skip
    _table(("prompt", "kind", "tokens", "scored", "top-1", "mean KL", "max KL", "diverges at"), rows, out)
    for s in scores:
        d = s.first_divergence
        misses = [p for p in s.scored if not top1_agrees(p, tie_margin)]
        if verbose or d is not None or s.notes or misses:
            out("")
            out(f"{s.id}: {s.continuation!r}")
            for note in s.notes:
                out(f"  note: {note}")
        if d is not None:
            out(f"  greedy continuations diverge at generated token {d.position}, after ...{s.context_before_divergence!r}:")
            out(f"  the other runtime chose {shown(d.token)} (rank {d.rank} for refllm), refllm would choose {shown(d.refllm_token)}")
            out(f"  {tie_verdict(d, tie_margin)}")
        if misses:
            where = ", ".join(f"{p.position} ({shown(p.token)} vs refllm {shown(p.refllm_token)}, {p.margin:.3f} nats)" for p in misses)
            out(f"  top-1 differs beyond the {tie_margin:g}-nat tie margin at generated token {where}")
        if verbose or d is not None:
            position_table(s, lambda line: out("  " + line), around=None if verbose else (d.position if d else None))
    out("")
    fd = summary["first_divergence"]
    out(f"positions scored: {summary['positions_scored']}   top-1 agreement: {_num(summary['top1_agreement'], '.2%')} "
        f"(min {summary['thresholds']['min_top1']:.0%}; exact {_num(summary['top1_exact'], '.2%')})   mean KL: {_num(summary['mean_kl'], '.5f')} "
        f"(max {summary['thresholds']['max_mean_kl']})   p99 KL: {_num(summary['p99_kl'], '.5f')}   "
        f"worst rank: {summary['worst_rank']}")  # fmt: skip
    if fd is not None:
        out(f"first divergence: prompt {fd['prompt']}, generated token {fd['position']}: "
            f"other {shown(fd['token'])} vs refllm {shown(fd['refllm_token'])}")  # fmt: skip
    out("PASS" if summary["passed"] else "FAIL: " + "; ".join(summary["failures"]))
