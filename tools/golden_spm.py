#!/usr/bin/env python
"""llama.cpp's SentencePiece ids where the short golden corpus is thin -> golden/tokens/gemma3_spm.json.

    python tools/make_golden.py spm        # or: python tools/golden_spm.py

Three sections, each ids from llama.cpp (llama-cpp-python's ``Llama(vocab_only=True)``,
add_special=False, parse_special=False):

    long          Gemma 3 on long_texts(): 1-2 kB of prose, CJK, code, emoji, whitespace
                  runs, characters missing from the vocabulary -- long merge chains
    flat_scores   Gemma 3's vocabulary with every score 0.0 (what a GGUF without
                  tokenizer.ggml.scores gets) on the tokenizer corpus and long_texts():
                  every merge ties, so only llama.cpp's position tie-break decides
    tiny          tiny-gemma3 (tools/make_tiny_models.py; few single characters are
                  tokens) on long_texts()

Needs the ``reference`` extra; tests/test_tokenizer_spm.py only reads the file.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET = REPO / "golden" / "tokens" / "gemma3_spm.json"

ENGLISH = (
    "The sky looks blue because air scatters short wavelengths of sunlight more than long ones. "
    "Rayleigh scattering grows with the fourth power of the frequency, so violet and blue dominate; "
    "our eyes are less sensitive to violet, and some of it is absorbed high in the atmosphere. "
    "At sunset the light crosses much more air, and the reds and oranges are what is left. "
    "Clouds are white because their droplets scatter all colours alike (Mie scattering). "
    "Don't forget: it's the model's vocabulary -- not the user's keyboard -- that decides the pieces!"
)
CJK = (
    "天空之所以是蓝色的，是因为空气对短波长的阳光散射得更多。瑞利散射的强度与频率的四次方成正比。"
    "日没のとき、光はより多くの空気を通過し、赤やオレンジが残ります。雲が白いのは水滴が大きいからです。"
    "하늘이 파란 이유는 공기가 짧은 파장의 빛을 더 많이 산란시키기 때문입니다. 노을은 붉습니다."
)
CODE = '''import heapq
from dataclasses import dataclass


@dataclass
class Bigram:
\tscore: float
\tleft: int

    def __lt__(self, other: "Bigram") -> bool:  # max-heap by score, then leftmost
        return (-self.score, self.left) < (-other.score, other.left)


def tokenize(text: str, vocab: dict[str, int]) -> list[int]:
    heap = [Bigram(vocab.get(text[i:i + 2], 0.0), i) for i in range(len(text) - 1)]
    heapq.heapify(heap)
    while heap:
        best = heapq.heappop(heap)
        if best.score <= -1e9:
            break
    return [vocab[c] for c in text if c in vocab]  # {"a": 1, 'b': [2, 3]}
'''
EMOJI = ("😀😃😄😁 👍🏻👍🏼👍🏽👍🏾👍🏿 👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 🇫🇷🇯🇵🇧🇷 ❤️‍🔥 🫠🫶🪿 "
         "I ❤ NY ✓✗ → ← ∑∫∂√∞ ≤≥≠≈ ★☆ ♠♣♥♦ «»“”‘’ … — – ™©® °C ½¾ ")
MISSING = ("Linear B 𐀀𐀁𐀂, cuneiform 𒀀𒀁, Gothic 𐌰𐌱𐍈, private use \ue000\ue001\uf8ff, "
           "Tangut 𗀀𗀁, noncharacter-adjacent \ufffd\ufffc, Old Italic 𐌀𐌁, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛, "
           "rare CJK 𠀀𠀁𪜀 and ideographic space\u3000here, Deseret 𐐷𐐸, Ogham ᚁᚂᚃ ᚄ.")


def long_texts() -> list[str]:
    """A few long texts (~1-2 kB each), fixed: the merge loop on long chains and odd characters."""
    rng = random.Random(2026)
    alphabet = ENGLISH + CJK + EMOJI + MISSING + "\t\n  \r\n"
    fuzz = "".join(rng.choice(alphabet) for _ in range(800))
    spaces = "".join(word + " " * n + ("\n" * (n % 4)) + "\t" * (n % 3)
                     for n, word in enumerate(ENGLISH.split()[:40]))
    return [
        ENGLISH + "\n\n" + ENGLISH.upper() + "\n" + ENGLISH.replace(" ", ""),
        CJK + " " + CJK.replace("。", "。 "),
        CODE.replace("    ", "\t", 3),
        EMOJI * 2 + "text" + EMOJI.replace(" ", ""),
        spaces,
        MISSING + MISSING.replace(" ", ""),
        fuzz,
        "ab" * 200 + " " + "a" * 300 + " " + "abc" * 100 + " " + "▁" * 64 + " the" * 50,
    ]


def flat_scores_copy(source: Path, target: Path) -> None:
    """Copy a GGUF with every value of tokenizer.ggml.scores set to 0.0 (same length: nothing moves)."""
    data = bytearray(source.read_bytes())
    key = b"tokenizer.ggml.scores"
    at = data.find(key, 0, 1 << 26)  # in the metadata, which comes first
    if at < 0:
        raise SystemExit(f"{source}: no {key.decode()}")
    start = at + len(key)
    value_type, element_type, count = struct.unpack_from("<IIQ", data, start)
    if (value_type, element_type) != (9, 6):  # GGUF ARRAY of FLOAT32
        raise SystemExit(f"{source}: {key.decode()} is not an array of float32")
    first = start + 16
    data[first : first + 4 * count] = bytes(4 * count)
    target.write_bytes(bytes(data))


def llama_cpp_ids(path: Path, texts: list[str]) -> list[dict]:
    import llama_cpp

    model = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    cases = [{"text": t, "ids": model.tokenize(t.encode("utf-8"), add_bos=False, special=False)} for t in texts]
    model.close()
    return cases


def main(argv: list[str] | None = None) -> int:
    import llama_cpp

    import refllm.packaged_models as packaged

    sys.path.insert(0, str(REPO / "tools"))
    import make_golden

    make_tiny = make_golden._load_tool_module("make_tiny_models")
    texts, corpus = long_texts(), make_golden.tokenizer_corpus()
    gemma = packaged.gemma3_path()
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "gemma3-flat-scores.gguf"
        flat_scores_copy(gemma, flat)
        tiny = make_tiny.write_tiny_model(Path(tmp) / make_tiny.tiny_model_filename("gemma3", "Q8_0"), "gemma3", "Q8_0")
        out = {
            "gguf": gemma.name,
            "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} (vocab_only, tokenize without BOS/specials)",
            "long": llama_cpp_ids(gemma, texts),
            "flat_scores": llama_cpp_ids(flat, corpus + texts),
            "tiny": llama_cpp_ids(tiny, texts),
        }
    TARGET.write_text(make_golden._json_one_case_per_line(out), encoding="utf-8")
    make_golden._update_manifest("spm", {"engine": "llama.cpp (llama-cpp-python, vocab_only)",
                                         "llama_cpp_python_version": llama_cpp.__version__,
                                         "command": "python tools/make_golden.py spm"})
    print(f"{TARGET}: " + ", ".join(f"{len(out[k])} {k}" for k in ("long", "flat_scores", "tiny")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
