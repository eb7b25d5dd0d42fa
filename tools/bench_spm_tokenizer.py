#!/usr/bin/env python
"""Gemma 3's SentencePiece tokenizer: build time and encode time on 1-100 kB of text.

    python tools/bench_spm_tokenizer.py            # median of --rounds runs each, printed as a table
    python tools/bench_spm_tokenizer.py --huge     # 1M / 16M-character single lines: time and peak memory

--huge runs each case once in a fresh process (so its peak RSS is its own): one-line
English through ``encode`` (cut at safe points) and through the single merge loop
(``SentencePieceBPE.merge``: what encode did before), one character repeated (no safe
point at all), and SmolLM2's gpt2 BPE (HF tokenizers) for comparison. (16M through the
single loop is left out: ~130 s and +2 GB when measured.)

Build = ``Tokenizer(vocab)`` for an already-read ``Vocab`` (the part refllm.tokenizer.spm
owns); reading the vocabulary out of the GGUF is timed on its own line. The texts are
made here, deterministically: English prose and CJK prose from a few fixed sentences in
a seeded random order, with a paragraph break every ~500 characters (Gemma splits its
newline tokens off first, so each paragraph is merged on its own; "1 line" has none,
the worst case for the merge loop's heap). Sizes are UTF-8 bytes (10 kB of CJK is ~3.4k
characters).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ENGLISH = [
    "The sky looks blue because air scatters short wavelengths of sunlight more than long ones.",
    "Rayleigh scattering grows with the fourth power of the frequency, so violet and blue dominate.",
    "Our eyes are less sensitive to violet, and some of it is absorbed high in the atmosphere.",
    "At sunset the light travels through much more air, and the reds and oranges are what is left.",
    "Clouds are white because their droplets are large enough to scatter all colours alike.",
    "On Mars the dust makes the daytime sky look butterscotch, while its sunsets turn bluish.",
    "A tokenizer turns text into integers, and a good one does it quickly and exactly.",
    "Don't forget: it's the model's vocabulary, not the user's keyboard, that decides the pieces.",
    "In 1871, John William Strutt published the explanation that now carries his title's name.",
    "Photographers call the minutes after sunset the blue hour, when the sky glows a deep indigo.",
]
CJK = [
    "天空之所以是蓝色的，是因为空气对短波长的阳光散射得更多。",
    "瑞利散射的强度与频率的四次方成正比，所以紫光和蓝光占主导。",
    "日没のとき、光はより多くの空気を通過し、赤やオレンジが残ります。",
    "雲が白いのは、水滴がすべての色を同じように散乱させるほど大きいからです。",
    "火星では塵のために昼の空が黄褐色に見え、夕焼けは青みがかります。",
    "分词器把文本变成整数，好的分词器既快又准确。",
]


def prose(sentences: list[str], n_bytes: int, joiner: str, seed: int = 0) -> str:
    """Sentences in a seeded random order, a blank line every ~500 characters, cut to n_bytes of UTF-8."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = paragraph = 0
    while size < n_bytes:
        sentence = rng.choice(sentences)
        parts.append(sentence)
        size += len(sentence.encode("utf-8")) + 1
        paragraph += len(sentence)
        if paragraph > 500:
            parts.append("\n\n")
            paragraph = 0
        else:
            parts.append(joiner)
    text = "".join(parts).encode("utf-8")[:n_bytes]
    return text.decode("utf-8", errors="ignore")  # a cut character is dropped


def median_seconds(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


HUGE_CASES = [  # (label, model, text kind, characters, how)
    ("Gemma 1M English 1 line, encode", "gemma3", "english", 1_000_000, "encode"),
    ("Gemma 1M English 1 line, 1 loop", "gemma3", "english", 1_000_000, "merge"),
    ("Gemma 16M English 1 line, encode", "gemma3", "english", 16_000_000, "encode"),
    ("Gemma 1M 'a' x 1M, encode", "gemma3", "one character", 1_000_000, "encode"),
    ("Gemma 1M random tokens, encode", "gemma3", "token soup", 1_000_000, "encode"),
    ("SmolLM2 1M English 1 line", "smollm2", "english", 1_000_000, "encode"),
    ("SmolLM2 16M English 1 line", "smollm2", "english", 16_000_000, "encode"),
]


def huge_text(kind: str, n_chars: int, tokenizer) -> str:
    if kind == "one character":
        return "a" * n_chars
    if kind == "token soup":  # distinct pieces: nothing for encode to reuse
        import numpy as np

        tokens = [t for t in tokenizer.vocab.tokens[1000:200_000] if not t.startswith("<")]
        text = "".join(np.random.default_rng(0).choice(tokens, n_chars // 3))
        return text.replace("▁", " ")[:n_chars]
    line = prose(ENGLISH, 100_000, " ").replace("\n\n", " ")
    return (line * (n_chars // len(line) + 1))[:n_chars]


def run_one_huge_case(model: str, kind: str, n_chars: int, how: str) -> None:
    """Child process: encode once, print 'seconds ids peak_MiB_added'."""
    import resource

    from refllm.gguf import read
    from refllm.packaged_models import gemma3_path, smollm2_path
    from refllm.tokenizer import tokenizer_from_gguf
    from refllm.tokenizer.spm import escape_spaces

    tokenizer = tokenizer_from_gguf(read(gemma3_path() if model == "gemma3" else smollm2_path()))
    text = huge_text(kind, n_chars, tokenizer)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if how == "merge":  # the whole line through one merge loop, as encode did before cutting
        ids = tokenizer._spm.merge(escape_spaces(" " + text))
    else:
        ids = tokenizer.encode(text, add_special=False)
    seconds = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB -> MiB (Linux)
    print(f"{seconds:.3f} {len(ids)} {peak:.0f}")


def huge() -> int:
    import subprocess

    print(f"{'case (one process each)':36} {'seconds':>8} {'ids':>9} {'+peak MiB':>10}")
    for label, model, kind, n_chars, how in HUGE_CASES:
        out = subprocess.run([sys.executable, __file__, "--one", model, kind, str(n_chars), how],
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"{label:36} {float(out[0]):8.2f} {int(out[1]):9d} {float(out[2]):10.0f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--huge", action="store_true", help="1M / 16M-character lines, one process each")
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "KIND", "CHARS", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one_huge_case(args.one[0], args.one[1], int(args.one[2]), args.one[3])
        return 0
    if args.huge:
        return huge()

    from refllm.gguf import read
    from refllm.packaged_models import gemma3_path
    from refllm.tokenizer import Tokenizer, vocab_from_gguf

    gguf = read(gemma3_path())
    vocab = vocab_from_gguf(gguf)
    print(f"{'case':30} {'median s':>9}")
    print(f"{'read Vocab from the GGUF':30} {median_seconds(lambda: vocab_from_gguf(gguf), args.rounds):9.4f}")
    print(f"{'build Tokenizer(vocab)':30} {median_seconds(lambda: Tokenizer(vocab), args.rounds):9.4f}")
    print(f"{'safe-point pair table (lazy)':30} {median_seconds(lambda: Tokenizer(vocab)._spm.token_pairs(), args.rounds):9.4f}"
          "   (incl. a Tokenizer build)")
    tokenizer = Tokenizer(vocab)
    texts = {
        "encode English 1 kB": prose(ENGLISH, 1_000, " "),
        "encode English 10 kB": prose(ENGLISH, 10_000, " "),
        "encode English 100 kB": prose(ENGLISH, 100_000, " "),
        "encode CJK 10 kB": prose(CJK, 10_000, ""),
        "encode English 100 kB 1 line": prose(ENGLISH, 100_000, " ").replace("\n\n", " "),  # one fragment
    }
    for label, text in texts.items():
        seconds = median_seconds(lambda: tokenizer.encode(text, add_special=False), args.rounds)
        n_ids = len(tokenizer.encode(text, add_special=False))
        print(f"{label:30} {seconds:9.4f}   ({len(text)} chars -> {n_ids} ids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
