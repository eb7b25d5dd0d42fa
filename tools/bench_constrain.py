"""Per-token cost of constrained decoding next to a decode step.

    python tools/bench_constrain.py                 # Gemma 3 (262,144 tokens) and SmolLM2 (49,152)
    python tools/bench_constrain.py --models gemma3 --tokens 48

For each model: the time to build the vocabulary table (once per model), then one greedy
generation under a JSON schema, timing separately for every step
    fill   llguidance computing the allowed-token bitmask
    apply  unpacking the bits and setting forbidden logits to -inf (NumPy)
    step   the model's forward pass for one token (the decode step)
and prints medians and 95th percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import refllm
from refllm.constrain import TokenConstraint, json_schema_grammar, token_table
from refllm.constrain.grammar import llguidance_numpy
from refllm.generate import prepare
from refllm.packaged_models import gemma3_path, smollm2_path

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "hobbies"],
          "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"},
                         "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3}}}


class TimedConstraint(TokenConstraint):
    def __init__(self, *args):
        super().__init__(*args)
        self.fill_ms: list[float] = []
        self.apply_ms: list[float] = []

    def mask(self, logits):
        t0 = time.perf_counter()
        llguidance_numpy.fill_next_token_bitmask(self.matcher, self.words)
        t1 = time.perf_counter()
        allowed = np.unpackbits(self.words.view(np.uint8), bitorder="little").view(bool)[: logits.shape[-1]]
        masked = np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32, copy=False)
        t2 = time.perf_counter()
        self.fill_ms.append(1e3 * (t1 - t0))
        self.apply_ms.append(1e3 * (t2 - t1))
        return masked


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(values):8.3f} ms   p95 {p95:8.3f} ms"


def bench(name: str, path, n_tokens: int) -> None:
    model = refllm.load(str(path))
    prepare(model)  # tokenizer and weights, outside the timings
    t0 = time.perf_counter()
    table = token_table(model.tokenizer, model.n_vocab)
    table_s = time.perf_counter() - t0
    constraint = TimedConstraint(table, json_schema_grammar(SCHEMA))

    step_ms: list[float] = []
    forward = model.forward

    def timed_forward(ids, cache, *args, **kwargs):
        t = time.perf_counter()
        out = forward(ids, cache, *args, **kwargs)
        if len(ids) == 1:
            step_ms.append(1e3 * (time.perf_counter() - t))
        return out

    model.forward = timed_forward
    result = model.generate("Describe a person.", constraint=constraint, temperature=0, num_predict=n_tokens)
    print(f"{name}: n_vocab {model.n_vocab}, vocabulary table {table_s:.2f} s (once per model)")
    print(f"  output {result.text!r}")
    print(f"  mask fill  {summary(constraint.fill_ms)}")
    print(f"  mask apply {summary(constraint.apply_ms)}")
    print(f"  decode step {summary(step_ms)}  ({len(step_ms)} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma3", "smollm2"], choices=["gemma3", "smollm2"])
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    for name in args.models:
        bench(name, gemma3_path() if name == "gemma3" else smollm2_path(), args.tokens)


if __name__ == "__main__":
    main()
