"""``refllm eval``: perplexity and KL divergence of a model over a text file (refllm.conformance.evaluate).

    refllm eval perplexity smollm2 wiki.txt --ctx 512
    refllm eval kld model-f16.gguf wiki.txt --save-base base.npz
    refllm eval kld model-q4.gguf wiki.txt --base base.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from refllm.errors import InvalidRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="perplexity and KL divergence over a text file",
                                   description="Offline evaluation of a model over a UTF-8 text file.")  # fmt: skip
    commands = parser.add_subparsers(dest="eval_command", metavar="KIND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="a model name or a .gguf path")
        p.add_argument("file", help="a UTF-8 text file")
        p.add_argument("--backend", help="compute backend (numpy, numba, cuda)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = commands.add_parser("perplexity", help="perplexity with a sliding window",
                            description="Perplexity over FILE: windows of --ctx tokens every --stride tokens, "
                                        "each token scored once.")  # fmt: skip
    common(p)
    p.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    p.add_argument("--stride", type=int, help="tokens between window starts (default ctx/2)")
    p.set_defaults(func=perplexity_command)

    p = commands.add_parser("kld", help="KL divergence against saved base logits",
                            description="With --save-base: write the base model's log-probabilities for FILE. "
                                        "With --base: KL(base || MODEL) per token, as llama.cpp's perplexity "
                                        "--kl-divergence reports it.")  # fmt: skip
    common(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--base", metavar="BASE.npz", help="compare with this saved base")
    where.add_argument("--save-base", metavar="BASE.npz", help="save MODEL's log-probs as the base")
    p.add_argument("--ctx", type=int, default=512, help="with --save-base: window length (default 512)")
    p.add_argument("--stride", type=int, help="with --save-base: tokens between window starts (default ctx/2)")
    p.set_defaults(func=kld_command)


def _load(args: argparse.Namespace):
    import refllm

    model = refllm.load(args.model)
    if args.backend:
        from refllm.kernels.reference import get_backend

        get_backend(args.backend)
        model.backend = args.backend
    return model


def perplexity_command(args: argparse.Namespace, save_base: str | None = None) -> int:
    from refllm.cli.store import ProgressBar
    from refllm.conformance.evaluate import perplexity

    model = _load(args)
    bar = ProgressBar()
    try:
        result = perplexity(model, args.file, args.ctx, args.stride, bar, save_base=save_base)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(f"{result.n_tokens} tokens, ctx {args.ctx}: PPL = {result.ppl:.4f} +/- {result.ppl_stderr:.4f} "
              f"(mean NLL {result.mean_nll:.4f} nats)")  # fmt: skip
        if save_base:
            print(f"saved the base log-probabilities to {save_base}")
    return 0


def kld_command(args: argparse.Namespace) -> int:
    if args.save_base:
        return perplexity_command(args, save_base=args.save_base)
    if args.stride is not None or args.ctx != 512:
        raise InvalidRequest("--ctx/--stride come from the base file; give them with --save-base")
    from refllm.cli.store import ProgressBar
    from refllm.conformance.evaluate import kl_divergence, load_base

    base = load_base(args.base)  # a wrong --base fails before the model loads
    model = _load(args)
    bar = ProgressBar()
    try:
        r = kl_divergence(model, args.file, base, bar)
    finally:
        bar.close()
    if args.json:
        json.dump(asdict(r), sys.stdout)
        print()
        return 0
    print(f"tokens scored:   {r.n_tokens}")
    print(f"PPL(model):      {r.model.ppl:.4f} +/- {r.model.ppl_stderr:.4f}")
    print(f"PPL(base):       {r.base.ppl:.4f} +/- {r.base.ppl_stderr:.4f}")
    print(f"Mean KLD:        {r.mean_kl:.6f} +/- {r.mean_kl_stderr:.6f}")
    for name, value in r.percentiles.items():
        print(f"{name + ' KLD:':<16} {value:.6f}")
    print(f"RMS Δp:          {100 * r.rms_delta_p:.3f} %")
    print(f"Same top p:      {100 * r.same_top:.3f} +/- {100 * r.same_top_stderr:.3f} %")
    return 0
