#!/usr/bin/env python
"""Regenerate the golden files under golden/ from independent reference engines.

    python tools/make_golden.py tokens     # llama.cpp (xllamacpp) token ids -> golden/tokens/<model>.json
    python tools/make_golden.py chat       # transformers' chat-template renderer -> golden/tokens/chat_smollm2.json
    python tools/make_golden.py logits     # forward-pass logits (tools/golden_logits.py, when present)
    python tools/make_golden.py ops        # llama.cpp's intermediate tensors (tools/capture_llamacpp_tensors.py)
    python tools/make_golden.py spm        # llama.cpp's SentencePiece ids, long texts / equal scores (tools/golden_spm.py)

Needs the ``reference`` extra (``pip install -e .[reference]``); the tests only read the
files this writes, never these engines.

Adding a sub-command: write a tools/<module>.py with ``main(argv) -> int`` and name it in
``SUBCOMMANDS`` below; ``make_golden.py NAME ARGS...`` calls ``<module>.main(ARGS)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"
GOLDEN_TOKENS = REPO / "golden" / "tokens"
sys.path.insert(0, str(REPO))

# name -> (module in tools/ defining add_arguments/run, or None for this file; one-line help)
SUBCOMMANDS: dict[str, tuple[str | None, str]] = {
    "tokens": (None, "llama.cpp token ids for the tokenizer corpus (both real models)"),
    "chat": (None, "transformers' renderings of SmolLM2's chat template"),
    "logits": ("golden_logits", "forward-pass logits from llama.cpp / transformers"),
    "ops": ("capture_llamacpp_tensors", "llama.cpp's intermediate tensors, op by op (golden/llamacpp_ops/)"),
    "spm": ("golden_spm", "llama.cpp's SentencePiece ids on long texts and equal scores (golden/tokens/gemma3_spm.json)"),
}


# =========================================================================== corpus

def tokenizer_corpus() -> list[str]:
    """The strings both models are checked on (>= 300): every kind of text that trips tokenizers."""
    words = ["Hello", "hello", "HELLO", "world", "tokenization", "don't", "it's", "I'm", "we're", "you've",
             "they'll", "he'd", "O'Neil", "rock'n'roll", "e-mail", "state-of-the-art", "co-operate"]
    cases: list[str] = ["", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t\n"]
    cases += words
    cases += [" " + w for w in words] + ["  " + w for w in words[:6]] + [w + " " for w in words[:6]]
    cases += [
        # sentences and punctuation
        "Hello, world!", "Hello world.", "What's up?", "The quick brown fox jumps over the lazy dog.",
        "Wait... what?!", "(parenthesised) [bracketed] {braced}", "\"quoted\" and 'single'", "a,b;c:d",
        "semi;colon", "100% sure", "#hashtag @mention", "email@example.com", "https://example.com/path?q=1&r=2",
        "C:\\Users\\name\\file.txt", "/usr/local/bin/python3", "~/.config", "snake_case_name", "camelCaseName",
        "PascalCaseName", "SCREAMING_SNAKE", "kebab-case-name", "a.b.c.d", "....", "---", "***bold***", "__init__",
        # whitespace runs
        "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\n\n\nb", "a \n b", "trailing   ",
        "   leading", "  both  ", " \t mixed \t ", "line1\nline2\nline3", "para1\n\npara2", "crlf\r\nline",
        "many" + " " * 17 + "spaces", "tabs" + "\t" * 9 + "end", "\n" * 7, " " * 40, "\t" * 12, "x" + "\n \n" * 5,
        # digits and numbers
        "0", "1", "12", "123", "1234", "12345", "123456789", "3.14159", "-42", "+7", "1,000,000", "1_000_000",
        "0x1F", "0b1010", "1e-10", "6.022e23", "2024-01-15", "12:30:45", "$19.99", "€100", "50%", "1/2", "v1.2.3",
        "route 66", "the year 1999", " 2000", "  31337", "1 2 3 4 5", "١٢٣", "一二三", "Ⅻ", "½ ¾", "²³",
        "1234567890" * 5, "9" * 50,
        # code
        "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "if x == 1:\n\tprint('one')", "const f = (a, b) => a + b;", "<html><body>Hi</body></html>",
        "SELECT * FROM users WHERE id = 1;", "import numpy as np\nnp.zeros((3, 4))", "x+=1", "a != b && c <= d",
        "#include <stdio.h>", "    indented four", "        indented eight", "\tindented tab", "//comment", "/* block */",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "```python\nprint(1)\n```", "$ ls -la | grep py",
        "lambda x: x**2", "std::vector<int> v;", "fn main() { println!(\"hi\"); }", "<?php echo 1; ?>",
        "  </div>\n</body>", "<div class=\"a\">text</div>", "<br/>", "<s>strike</s>", "</s>", "<table><tr><td>1</td></tr></table>",
        # accented Latin and other scripts
        "café", "naïve", "résumé", "Ångström", "Müller", "straße", "façade", "jalapeño", "Ελληνικά", "Русский текст",
        "Привет, мир!", "Čeština", "Łódź", "Ñandú", "Œuvre", "ÀÉÎÕÜ", "ǅ ǈ ǋ", "İstanbul", "ı and i",
        "日本語のテキスト", "中文测试", "你好，世界！", "한국어 텍스트", "こんにちは", "カタカナ", "ひらがな", "漢字",
        "東京タワー 333m", "ไทย", "हिन्दी", "বাংলা", "தமிழ்", "ქართული", "Հայերեն", "አማርኛ",
        "עברית", "العربية", "مرحبا بالعالم", "שלום עולם", "فارسی", "Mixed עברית and English", "RTL\u200fmark",
        "zero\u200bwidth", "non\u00a0breaking", "soft\u00adhyphen", "e\u0301 (combining)", "ﬁ ligature", "Ｆｕｌｌｗｉｄｔｈ",
        # emoji and symbols
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🔥🔥🔥", "I ❤ NY", "✓ ✗", "→ ← ↑ ↓", "∑∫∂√∞", "≤≥≠≈", "°C", "™ © ®",
        "★☆", "♠♣♥♦", "…", "—", "–", "«guillemets»", "„German“", "“curly”", "‘single’", "emoji at end 🎉",
        "🎉 emoji at start", "text😀text", "🤖🦾🧠", "\U0001F9D1\u200d\U0001F4BB", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛", "\U00010348",
        # special-token look-alikes (plain text, parse_special=False)
        "<|im_start|>", "<|im_end|>", "<|im_start|>user\nHi<|im_end|>", "<|endoftext|>", "<start_of_turn>",
        "<end_of_turn>", "<start_of_turn>user\nHello<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>",
        "<s>", "[INST] hi [/INST]", "<<SYS>>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
        "<start_of_image>", "[multimodal]", "<unused0>", "<0x0A>", "<0x41>", "<|im_start", "im_start|>", "< |im_start| >",
        "text<|im_end|>more", "x<end_of_turn>y", "<|im_start|><|im_start|>", "<<|im_start|>>", "<repo_name>", "<filename>",
        # very long words and repetitions
        "a" * 100, "ab" * 60, "abc" * 40, "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Donaudampfschifffahrtsgesellschaftskapitän", "x" * 300, "aaaa bbbb cccc dddd", "the the the the the",
        "hahahahahahahahahahahahahahaha", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "!!!!!!!!!!!!", "??!!??!!", "=" * 40,
        "-" * 80, "#" * 20, "." * 33, "_" * 25, "😀" * 10, "日本" * 20,
        # mixed
        "Hello 世界 🌍 123", "Price: $5 (≈ €4.6)", "naïve café résumé", "Tab\tseparated\tvalues", "a,b,c\n1,2,3\n",
        "Q: 2+2=?\nA: 4", "She said: «Bonjour!»", "ÀB 12 ñ 😀 \t x", "mañana 明日 tomorrow", "x²+y²=z²",
        "user@host:~$ sudo rm -rf /tmp/x", "α β γ δ", "αβγδεζηθ", "ἀρχή", "I have 3 apples and 12 oranges.",
        "Call me at +1-555-0100.", "The ratio is 3:2.", "Temperature -40°C = -40°F", "version 2.0.0-beta+build.5",
        "Ünïcödé Tëxt", "Zürich, Genève, Bern", "São Paulo", "Kraków", "Reykjavík", "Dvořák", "Şişli", "Ærø",
    ]
    # leading spaces on a few non-Latin and numeric strings
    cases += [" " + s for s in ("日本語", "😀", "123", "café", "<|im_start|>", "\n", "العربية", "Привет")]
    cases += ["\n" + s for s in ("Hello", "def f():", "  indented", "123")]
    cases += [s + "\n" for s in ("Hello", "world", "123")]
    seen: set[str] = set()
    unique = []
    for case in cases:
        if case not in seen:
            seen.add(case)
            unique.append(case)
    return unique


FUZZ_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 3
    + " " * 40 + "\t\n\r" * 6 + ".,;:!?'\"()[]{}<>|/\\-_+=*&^%$#@~`"
    + "\u00a0\u2002\u2003\u2009\u200b\u3000\u2028\u0085"  # unusual spaces
    + "éèêëàâäôöûüçñßøåæœÉÀÇÑ" + "αβγδεζηθλμπσΩ" + "абвгдежзийклмнопрст" + "אבגדהוזחט" + "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
    + "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年" + "あいうえおかきくけこアイウエオ한국어텍스트"
    + "०१२३४५६७८९" + "٠١٢٣٤٥٦٧٨٩" + "０１２３４５６７８９" + "ⅠⅡⅢ½¼²³"
    + "\u0301\u0308\u0327\u064b\u093f\u0e31"  # combining marks
    + "😀😂👍🏽❤️🔥🎉🇫🇷👨‍👩‍👧" + "→←∑∫≤≥≠∞°©®™€£¥§¶•…—–«»“”‘’"
)
FUZZ_WORDS = ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "</s>", "<div>",
              "</div>", "[multimodal]", "<0x0A>", "  ", "   ", "\n\n", "\n\n\n", "\t\t", "'s", "'ll", "n't",
              "https://", "1234", "3.14", "the", " the", "▁", "Ġ", "<unk>", "<pad>"]


def fuzz_corpus(n: int = 300, seed: int = 1234) -> list[str]:
    """Random strings (fixed seed): characters from many scripts, odd spaces, and special-token look-alikes."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.2:
                parts.append(rng.choice(FUZZ_WORDS))
            else:
                parts.append("".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


def special_corpus() -> list[str]:
    """Strings tokenized with parse_special=True (chat-formatted text)."""
    return [
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n日本語?<|im_end|>", "<|endoftext|>", "a<|im_end|>b", "<|im_start|><|im_end|>",
        "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n", "<bos><start_of_turn>user\nHi<end_of_turn>",
        "<eos>", "<pad><unk><mask>", "x<end_of_turn>y", "<start_of_image>", "[multimodal]", "</s>",
        "Plain text, no specials.", "", " <|im_start|> ", "<|im_start|>\n\n<|im_end|>", "<repo_name>r<file_sep>f",
        "<unused0><unused1>", "<|im_start|>user\n<start_of_turn><end_of_turn><|im_end|>", "  <div>x</div>  ",
    ]


# =========================================================================== tokens (llama.cpp)

REAL_MODELS = {"smollm2": "smollm2_path", "gemma3": "gemma3_path"}
# Tiny synthetic models (tools/make_tiny_models.py) whose vocabulary is worth its own golden ids:
# tiny-gemma3's SentencePiece vocabulary lacks most single characters, so llama.cpp merges
# characters that are not tokens themselves ("e" "l" "l" -> "ell").
TINY_TOKEN_MODELS = {"tiny-gemma3": "gemma3"}


class LlamaCppServer:
    """xllamacpp's in-process llama.cpp server, bound to 127.0.0.1, asked over HTTP."""

    def __init__(self, model_path: Path):
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = 256
        params.n_parallel = 1
        params.cpuparams.n_threads = 1
        params.n_gpu_layers = 0
        params.warmup = False
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        self.server = xllamacpp.Server(params)
        self.url = self.server.listening_address.rstrip("/")

    def post(self, path: str, body: dict) -> dict:
        import urllib.request

        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        reply = self.post("/tokenize", {"content": text, "add_special": add_special, "parse_special": parse_special})
        return [int(t) for t in reply["tokens"]]

    def detokenize(self, ids: list[int]) -> str:
        return self.post("/detokenize", {"tokens": ids})["content"]


def _with_detokenized(case: dict, detokenized: str) -> dict:
    """Store llama.cpp's detokenized text only where it differs from the input (no round trip)."""
    if detokenized != case["text"]:
        case["detokenized"] = detokenized
    return case


# Other gpt2 pre-tokenizers, checked on SmolLM2's vocabulary: a copy of its GGUF with the 6-byte value of
# tokenizer.ggml.pre ("smollm") patched in place -- same length, so nothing else in the file moves.
# "default" is what llama.cpp uses when the key is missing: the key itself is renamed.
PRE_VARIANTS = {
    "llama3": (b"smollm", b"llama3"),  # llama.cpp LLAMA3 (ignore_merges)
    "megrez": (b"smollm", b"megrez"),  # llama.cpp QWEN2
    "mellum": (b"smollm", b"mellum"),  # llama.cpp GPT2
    "default": (b"tokenizer.ggml.pre", b"tokenizer.ggml.prX"),  # key missing -> DEFAULT
}


def _patched_copy(source: Path, old: bytes, new: bytes, target: Path, after: bytes = b"tokenizer.ggml.pre") -> None:
    """Copy a GGUF, replacing the first ``old`` at or after the key ``after`` (same length: nothing moves)."""
    data = bytearray(source.read_bytes())
    start = data.find(after, 0, 1 << 26)  # the metadata (with the vocabulary) comes first
    at = data.find(old, start, start + 64 + len(old)) if start >= 0 else -1
    if at < 0 or len(old) != len(new):
        raise SystemExit(f"cannot patch {old!r} in {source}")
    data[at : at + len(old)] = new
    target.write_bytes(bytes(data))


BOOL_FALSE, BOOL_TRUE = b"\x07\x00\x00\x00\x00", b"\x07\x00\x00\x00\x01"  # GGUF value type 7 (bool) + value


def make_space_prefix_variant(corpus: list[str], specials: list[str]) -> None:
    """Gemma 3's vocabulary with add_space_prefix=true: the SentencePiece path Llama 2 / Mistral GGUFs take."""
    import tempfile

    import refllm.packaged_models as packaged

    source = packaged.gemma3_path()
    key = b"tokenizer.ggml.add_space_prefix"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemma3-space-prefix.gguf"
        _patched_copy(source, key + BOOL_FALSE, key + BOOL_TRUE, path, after=key)
        server = LlamaCppServer(path)
        plain = [{"text": t, "ids": server.tokenize(t, add_special=False, parse_special=False)} for t in corpus]
        special = [{"text": t, "ids": server.tokenize(t, add_special=True, parse_special=True)} for t in specials]
        del server
    out = {"model": "gemma3", "gguf": f"{source.name} with tokenizer.ggml.add_space_prefix = true",
           "reference": "llama.cpp via xllamacpp", "plain": plain, "special": special}
    target = GOLDEN_TOKENS / "gemma3_space_prefix.json"
    target.write_text(_json_one_case_per_line(out), encoding="utf-8")
    print(f"{target}: {len(plain)} plain, {len(special)} special cases")


def make_pre_variants(corpus: list[str]) -> None:
    import tempfile

    import refllm.packaged_models as packaged

    source = packaged.smollm2_path()
    for name, (old, new) in PRE_VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"smollm2-pre-{name}.gguf"
            _patched_copy(source, old, new, path)
            server = LlamaCppServer(path)
            cases = [{"text": t, "ids": server.tokenize(t, add_special=False, parse_special=False)} for t in corpus]
            del server
        out = {"model": "smollm2", "pre": name, "gguf": f"{source.name} with {old.decode()} -> {new.decode()}",
               "reference": "llama.cpp via xllamacpp", "plain": cases}
        target = GOLDEN_TOKENS / f"smollm2_pre_{name}.json"
        target.write_text(_json_one_case_per_line(out), encoding="utf-8")
        print(f"{target}: {len(cases)} cases")


def make_tiny_tokens(name: str, corpus: list[str], specials: list[str]) -> None:
    """llama.cpp's ids on a tiny synthetic model's vocabulary (written to a temporary GGUF)."""
    import tempfile

    import xllamacpp

    make = _load_tool_module("make_tiny_models")
    arch = TINY_TOKEN_MODELS[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = make.write_tiny_model(Path(tmp) / make.tiny_model_filename(arch, "Q8_0"), arch, "Q8_0")
        server = LlamaCppServer(path)
        plain, fuzz = [], []
        for texts, cases in ((corpus, plain), (fuzz_corpus(), fuzz)):
            for text in texts:
                ids = server.tokenize(text, add_special=False, parse_special=False)
                cases.append(_with_detokenized({"text": text, "ids": ids}, server.detokenize(ids)))
        special = [{"text": t, "ids": server.tokenize(t, add_special=True, parse_special=True)} for t in specials]
        del server
    out = {"model": name, "gguf": f"tools/make_tiny_models.py {arch} Q8_0 seed 0 (vocabulary from spm_vocab())",
           "reference": f"llama.cpp via xllamacpp {xllamacpp.__version__}",
           "plain": plain, "fuzz": fuzz, "special": special}
    target = GOLDEN_TOKENS / f"{name}.json"
    target.write_text(_json_one_case_per_line(out), encoding="utf-8")
    print(f"{target}: {len(plain)} plain, {len(fuzz)} fuzz, {len(special)} special cases")


def make_tokens(args) -> int:
    import xllamacpp
    import refllm.packaged_models as packaged

    GOLDEN_TOKENS.mkdir(parents=True, exist_ok=True)
    corpus, specials = tokenizer_corpus(), special_corpus()
    for name in args.models:
        if name in TINY_TOKEN_MODELS:
            make_tiny_tokens(name, corpus, specials)
            continue
        path = getattr(packaged, REAL_MODELS[name])()
        server = LlamaCppServer(path)
        cases = []
        for text in corpus:
            ids = server.tokenize(text, add_special=False, parse_special=False)
            cases.append(_with_detokenized({"text": text, "ids": ids}, server.detokenize(ids)))
        fuzz = []
        for text in fuzz_corpus():
            ids = server.tokenize(text, add_special=False, parse_special=False)
            case = {"text": text, "ids": ids, "ids_special": server.tokenize(text, add_special=True, parse_special=True)}
            fuzz.append(_with_detokenized(case, server.detokenize(ids)))
        with_specials = [
            {"text": text, "ids": server.tokenize(text, add_special=True, parse_special=True)} for text in specials
        ]
        # a few with add_special=True and parse_special=False (BOS handling on plain text)
        with_bos = [
            {"text": text, "ids": server.tokenize(text, add_special=True, parse_special=False)}
            for text in ("", "Hello", " Hello", "<|im_start|>user", "<bos>hi")
        ]
        del server
        out = {
            "model": name,
            "gguf": path.name,
            "reference": f"llama.cpp via xllamacpp {xllamacpp.__version__}",
            "plain": cases,  # add_special=False, parse_special=False; "detokenized" only where != text
            "fuzz": fuzz,  # random strings: ids (as plain), ids_special (add_special=True, parse_special=True)
            "special": with_specials,  # add_special=True, parse_special=True
            "bos": with_bos,  # add_special=True, parse_special=False
        }
        target = GOLDEN_TOKENS / f"{name}.json"
        target.write_text(_json_one_case_per_line(out), encoding="utf-8")
        print(f"{target}: {len(cases)} plain, {len(fuzz)} fuzz, {len(with_specials)} special, {len(with_bos)} bos cases")
    if "smollm2" in args.models:
        make_pre_variants(corpus + fuzz_corpus(100, seed=99))
    if "gemma3" in args.models:
        make_space_prefix_variant(corpus + fuzz_corpus(100, seed=7), specials + fuzz_corpus(50, seed=8))
    _update_manifest("tokens", {
        "engine": "llama.cpp (xllamacpp in-process server: /tokenize, /detokenize)",
        "xllamacpp_version": xllamacpp.__version__,
        "command": "python tools/make_golden.py tokens",
    })
    return 0


# =========================================================================== chat (transformers)

def chat_conversations() -> list[dict]:
    """Conversations rendered by transformers' apply_chat_template machinery."""
    return [
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"messages": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello!"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
                      {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]},
        {"messages": [{"role": "user", "content": "Tell me a joke"}, {"role": "assistant", "content": "Why did the chicken...?"}],
         "add_generation_prompt": False},
        {"messages": [{"role": "user", "content": "multi\nline\n\ninput  with  spaces "}]},
        {"messages": [{"role": "user", "content": "日本語で答えて 😀"}, {"role": "assistant", "content": "はい！"},
                      {"role": "user", "content": "ありがとう"}]},
        {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": "<|im_start|>not a marker<|im_end|>"}]},
        {"messages": [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}]},
        {"messages": [{"role": "user", "content": "no generation prompt"}], "add_generation_prompt": False},
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
                      {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}, {"role": "user", "content": "U3"}]},
        # a final assistant message that the answer continues (Ollama's prefill; transformers' continue_final_message)
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France? Answer in JSON."},
                      {"role": "assistant", "content": '{"answer": '}], "continue_final_message": True},
        {"messages": [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two,"}],
         "continue_final_message": True},
    ]


FEATURE_TEMPLATES = [
    # tojson keeps key order and does not HTML-escape; tools are passed through
    "{% for m in messages %}{{ m | tojson }}\n{% endfor %}{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}",
    # trim_blocks / lstrip_blocks whitespace handling
    "{% for m in messages %}\n    {% if m.role == 'user' %}\n    U: {{ m.content }}\n    {% else %}\n    O: {{ m.content }}\n    {% endif %}\n{% endfor %}\n",
    # loopcontrols, namespace, loop variables, filters
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
    "{% set ns.n = ns.n + m.content | length %}[{{ loop.index0 }}:{{ m.role | upper }}:{{ m.content | trim }}]{% endfor %}"
    "{{ ns.n }}{% if add_generation_prompt %}<gen>{% endif %}{{ bos_token }}|{{ eos_token }}",
    # tool calls with dict arguments, tool results
    "{% for m in messages %}{{ m.role }}:{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.name }}"
    "({{ c.function.arguments | tojson }}){% endfor %}{% else %}{{ m.content }}{% endif %};{% endfor %}",
    # macros, string methods, tests, selectattr/map, items, loop.last, dict literals
    "{%- macro show(m) -%}<{{ m.role }}>{{ m.content.strip().split(' ') | join('_') }}</{{ m.role }}>{%- endmacro -%}\n"
    "{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | list -%}\n"
    "{%- if system %}SYS={{ system[0] }}{% endif %}\n"
    "{%- for m in messages if m.role != 'system' %}{{ show(m) }}{% if not loop.last %}|{% endif %}{% endfor %}\n"
    "{%- if tools is defined and tools is not none %}{% for k, v in tools[0].function.items() %}{{ k }};{% endfor %}{% endif %}\n"
    "{{- {'a': 1, 'b': [1, 2]} | tojson }}{{ messages[1].content.startswith('  What') }}{{ 'x' if undefined_var is undefined }}",
    # whitespace control with dashes mixed with trim_blocks, nested loops, loop.index/length, replace/title
    "{% for m in messages -%}\n  {%- for c in m.content[:3] %}[{{ c }}]{% endfor %}\n"
    "  {{ loop.index }}/{{ loop.length }} {{ m.role | replace('a', 'A') | title }}\n{% endfor -%}\n"
    "{%- if add_generation_prompt %}\n  GEN\n{% endif %}\n",
]


def feature_cases() -> list[dict]:
    messages = [
        {"role": "system", "content": "Use <tools> & \"quotes\"."},
        {"role": "user", "content": "  What's the weather in Paris?  "},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
        {"role": "tool", "content": "{\"temp\": 21}", "name": "get_weather"},
        {"role": "assistant", "content": "It is 21 °C."},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now>",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    return [{"template": t, "messages": messages, "tools": tools, "add_generation_prompt": True} for t in FEATURE_TEMPLATES]


def make_chat(args) -> int:
    import transformers
    from transformers.utils.chat_template_utils import render_jinja_template

    import refllm.packaged_models as packaged
    from refllm.gguf import read

    gguf_file = read(packaged.smollm2_path())
    template = gguf_file.metadata["tokenizer.chat_template"]
    tokens = gguf_file.metadata["tokenizer.ggml.tokens"]
    bos = tokens[int(gguf_file.metadata["tokenizer.ggml.bos_token_id"])]
    eos = tokens[int(gguf_file.metadata["tokenizer.ggml.eos_token_id"])]
    cases = []
    for conversation in chat_conversations():
        continue_final_message = conversation.get("continue_final_message", False)
        add_generation_prompt = conversation.get("add_generation_prompt", not continue_final_message)
        rendered, _ = render_jinja_template(
            conversations=[conversation["messages"]], chat_template=template, add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message, bos_token=bos, eos_token=eos,
        )
        cases.append({"messages": conversation["messages"], "add_generation_prompt": add_generation_prompt,
                      "continue_final_message": continue_final_message, "rendered": rendered[0]})
    features = []
    for case in feature_cases():
        rendered, _ = render_jinja_template(
            conversations=[case["messages"]], tools=case["tools"], chat_template=case["template"],
            add_generation_prompt=case["add_generation_prompt"], bos_token="<s>", eos_token="</s>",
        )
        features.append(dict(case, bos_token="<s>", eos_token="</s>", rendered=rendered[0]))
    GOLDEN_TOKENS.mkdir(parents=True, exist_ok=True)
    target = GOLDEN_TOKENS / "chat_smollm2.json"
    out = {"model": "smollm2", "reference": f"transformers {transformers.__version__} render_jinja_template "
           "(the renderer behind apply_chat_template) fed the GGUF's tokenizer.chat_template", "cases": cases,
           "features": features}
    target.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{target}: {len(cases)} conversations, {len(features)} feature templates")
    _update_manifest("chat", {
        "engine": "transformers.utils.chat_template_utils.render_jinja_template",
        "transformers_version": transformers.__version__,
        "command": "python tools/make_golden.py chat",
    })
    return 0


def _json_one_case_per_line(data: dict) -> str:
    """JSON with each case on its own line: small, and diffs show which string changed."""
    lines = ["{"]
    items = list(data.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if isinstance(value, list):
            lines.append(f"{json.dumps(key)}: [")
            lines += [json.dumps(case, ensure_ascii=False) + ("," if i < len(value) - 1 else "") for i, case in enumerate(value)]
            lines.append("]" + comma)
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    return "\n".join(lines + ["}"]) + "\n"


def _update_manifest(section: str, entry: dict) -> None:
    path = GOLDEN_TOKENS / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    entry["generated"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest[section] = entry
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


# =========================================================================== dispatcher

def _add_tokens_arguments(parser: argparse.ArgumentParser) -> None:
    names = sorted(REAL_MODELS) + sorted(TINY_TOKEN_MODELS)
    parser.add_argument("--models", nargs="+", choices=names, default=names)


# This file's own sub-commands: name -> (add_arguments(parser), run(args) -> int)
LOCAL = {"tokens": (_add_tokens_arguments, make_tokens), "chat": (lambda parser: None, make_chat)}


def _load_tool_module(name: str):
    path = TOOLS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"refllm_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the module look themselves up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    if command in SUBCOMMANDS and SUBCOMMANDS[command][0] is not None:
        # another tool's sub-command: it parses its own arguments
        return int(_load_tool_module(SUBCOMMANDS[command][0]).main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        if module_name is None:
            add_arguments, run = LOCAL[name]
            add_arguments(sub)
            sub.set_defaults(run=run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
