"""Tokenizers built from the GGUF against llama.cpp's ids (golden/tokens/, tools/make_golden.py tokens).

Every expected id comes from llama.cpp (xllamacpp); the tests only read the stored files.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import refllm
from refllm.errors import InvalidRequest, RefllmError, UnsupportedModel
from refllm.tokenizer import Tokenizer, TokenType, Vocab
from refllm.tokenizer.bpe import bytes_to_unicode, split_merge

from conftest import GOLDEN

MODELS = ["smollm2", "gemma3"]


@pytest.fixture(scope="session")
def models():
    return {name: refllm.load(name) for name in MODELS}


@pytest.fixture(scope="session")
def golden():
    return {name: json.loads((GOLDEN / "tokens" / f"{name}.json").read_text(encoding="utf-8")) for name in MODELS}


def _mismatches(tokenizer, cases, add_special, parse_special):
    bad = []
    for case in cases:
        ids = tokenizer.encode(case["text"], add_special=add_special, parse_special=parse_special)
        if ids != case["ids"]:
            bad.append((case["text"], ids, case["ids"]))
    return bad


# ----------------------------------------------------------------------------- exact ids


@pytest.mark.parametrize("name", MODELS)
def test_golden_covers_the_corpus(golden, name):
    data = golden[name]
    assert len(data["plain"]) >= 300 and "llama.cpp" in data["reference"]
    texts = [case["text"] for case in data["plain"]]
    assert "" in texts and any("<|im_start|>" in t for t in texts) and any(len(t) >= 300 for t in texts)


def test_golden_files_match_the_tool(golden):
    """golden/tokens/ holds exactly the strings tools/make_golden.py generates (no stale file), and the
    tool imports without the reference engines."""
    from conftest import load_tool

    tool = load_tool("make_golden")
    assert {"tokens", "chat", "logits"} <= set(tool.SUBCOMMANDS)
    for name in MODELS:
        assert [c["text"] for c in golden[name]["plain"]] == tool.tokenizer_corpus()
        assert [c["text"] for c in golden[name]["fuzz"]] == tool.fuzz_corpus()
        assert [c["text"] for c in golden[name]["special"]] == tool.special_corpus()


@pytest.mark.parametrize("name", MODELS)
def test_plain_text_ids_identical_to_llama_cpp(models, golden, name):
    """add_special=False, parse_special=False on every corpus string: 100% identical."""
    assert _mismatches(models[name].tokenizer, golden[name]["plain"], False, False) == []


@pytest.mark.parametrize("name", MODELS)
def test_random_strings_identical_to_llama_cpp(models, golden, name):
    """300 seeded random strings (many scripts, odd spaces, special-token look-alikes), both parse modes."""
    tokenizer = models[name].tokenizer
    fuzz = golden[name]["fuzz"]
    assert len(fuzz) >= 300
    assert _mismatches(tokenizer, fuzz, False, False) == []
    specials = [{"text": c["text"], "ids": c["ids_special"]} for c in fuzz]
    assert _mismatches(tokenizer, specials, True, True) == []


@pytest.mark.parametrize("pre", ["llama3", "megrez", "mellum", "default"])
def test_other_pre_tokenizers_identical_to_llama_cpp(models, pre):
    """llama3 (LLAMA3 regex, ignore_merges), megrez (QWEN2), mellum (GPT2), missing key (DEFAULT): llama.cpp ran
    SmolLM2's vocabulary with tokenizer.ggml.pre patched; we build the same vocabulary with that pre."""
    data = json.loads((GOLDEN / "tokens" / f"smollm2_pre_{pre}.json").read_text(encoding="utf-8"))
    vocab = copy.copy(models["smollm2"].tokenizer.vocab)
    vocab.pre = pre
    assert _mismatches(Tokenizer(vocab), data["plain"], False, False) == []


def test_sentencepiece_space_prefix_identical_to_llama_cpp(models):
    """The Llama 2 / Mistral path: Gemma's vocabulary with add_space_prefix=true (a "▁" before the text and
    after every special token), plain and with specials parsed; llama.cpp ran the patched GGUF."""
    data = json.loads((GOLDEN / "tokens" / "gemma3_space_prefix.json").read_text(encoding="utf-8"))
    tokenizer = copy.copy(models["gemma3"].tokenizer)  # the BPE model does not depend on the flag: reuse it
    tokenizer.vocab = copy.copy(tokenizer.vocab)
    tokenizer.vocab.add_space_prefix = True
    assert _mismatches(tokenizer, data["plain"], False, False) == []
    assert _mismatches(tokenizer, data["special"], True, True) == []


@pytest.mark.parametrize("name", MODELS)
def test_parse_special_ids_identical_to_llama_cpp(models, golden, name):
    assert _mismatches(models[name].tokenizer, golden[name]["special"], True, True) == []


@pytest.mark.parametrize("name", MODELS)
def test_add_special_ids_identical_to_llama_cpp(models, golden, name):
    """BOS per add_bos_token: Gemma adds <bos>, SmolLM2 adds nothing."""
    assert _mismatches(models[name].tokenizer, golden[name]["bos"], True, False) == []


@pytest.mark.parametrize("name", MODELS)
def test_model_tokenize_is_the_tokenizer(models, golden, name):
    model = models[name]
    case = golden[name]["special"][0]
    assert model.tokenize(case["text"], add_special=True, parse_special=True) == case["ids"]
    assert model.detokenize(case["ids"]) == model.tokenizer.decode(case["ids"])


# ----------------------------------------------------------------------------- decode


@pytest.mark.parametrize("name", MODELS)
def test_decode_identical_to_llama_cpp(models, golden, name):
    tokenizer = models[name].tokenizer
    cases = golden[name]["plain"] + golden[name]["fuzz"]
    bad = [(c["text"], tokenizer.decode(c["ids"])) for c in cases
           if tokenizer.decode(c["ids"]) != c.get("detokenized", c["text"])]
    assert bad == []


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_wherever_llama_cpp_round_trips(models, golden, name):
    tokenizer = models[name].tokenizer
    cases = [c["text"] for c in golden[name]["plain"] + golden[name]["fuzz"] if "detokenized" not in c]
    assert len(cases) > 550
    assert [t for t in cases if tokenizer.decode(tokenizer.encode(t, add_special=False)) != t] == []


@pytest.mark.parametrize("name", MODELS)
def test_special_tokens_render_only_when_asked(models, name):
    tokenizer = models[name].tokenizer
    eos = tokenizer.eos_id
    text = tokenizer.raw_token(eos)
    assert tokenizer.decode([eos]) == text
    assert tokenizer.decode([eos], special=False) == ""
    assert tokenizer.token_text(eos) == text


@pytest.mark.parametrize("name", MODELS)
def test_incremental_decoder_streams_whole_characters(models, golden, name):
    """Pushing ids one at a time gives the same text as decode(), never a half character."""
    tokenizer = models[name].tokenizer
    for case in golden[name]["plain"] + golden[name]["fuzz"]:
        if "detokenized" in case:  # llama.cpp does not round-trip it (a literal "▁" in the input)
            continue
        decoder = tokenizer.decoder()
        pieces = [decoder.push(i) for i in case["ids"]]
        pieces.append(decoder.flush())
        assert "".join(pieces) == case["text"]
        assert all("\ufffd" not in piece for piece in pieces)


def test_incremental_decoder_holds_back_split_emoji(models):
    """😀 is four byte tokens in Gemma (byte fallback): nothing comes out until the fourth."""
    tokenizer = models["gemma3"].tokenizer
    byte_ids = [tokenizer.token_id(f"<0x{b:02X}>") for b in "😀".encode("utf-8")]
    decoder = tokenizer.decoder()
    assert [decoder.push(i) for i in byte_ids] == ["", "", "", "😀"]
    assert decoder.push(byte_ids[0]) == "" and decoder.flush() == "\ufffd"  # a cut-off character shows as U+FFFD


def test_byte_level_pieces(models):
    """Byte-level tokens map back through GPT-2's byte table: 'Ġ' is a space, 'Ċ' a newline."""
    tokenizer = models["smollm2"].tokenizer
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    space_world = tokenizer.token_id("Ġworld")
    assert tokenizer.token_bytes(space_world) == b" world"
    assert tokenizer.raw_token(space_world) == "Ġworld"


# ----------------------------------------------------------------------------- specials


@pytest.mark.parametrize("name", MODELS)
def test_plain_text_never_yields_control_tokens(models, golden, name):
    """Prompt-injection safety: with parse_special=False no control token comes out of any text."""
    tokenizer = models[name].tokenizer
    control = set(np.flatnonzero(tokenizer.vocab.types == TokenType.CONTROL).tolist())
    for case in golden[name]["plain"] + golden[name]["fuzz"]:
        assert not control & set(tokenizer.encode(case["text"], add_special=False)), case["text"]
    marker = "<|im_start|>" if name == "smollm2" else "<start_of_turn>"
    assert tokenizer.token_id(marker) in tokenizer.encode(marker, add_special=False, parse_special=True)


def test_special_ids(models):
    smol, gemma = models["smollm2"].tokenizer, models["gemma3"].tokenizer
    assert (smol.bos_id, smol.eos_id, smol.add_bos, smol.vocab_size) == (1, 2, False, 49152)
    assert smol.token_id("<|im_end|>") in smol.eog_ids and smol.token_id("<|endoftext|>") in smol.eog_ids
    assert (gemma.bos_id, gemma.eos_id, gemma.add_bos, gemma.vocab_size) == (2, 1, True, 262144)
    assert {gemma.token_id("<eos>"), gemma.token_id("<end_of_turn>")} <= gemma.eog_ids
    assert gemma.bos_id not in gemma.eog_ids


def test_encode_chat_adds_bos_once(models):
    gemma = models["gemma3"].tokenizer
    assert gemma.encode_chat("<start_of_turn>user\nHi")[:2] == [gemma.bos_id, gemma.token_id("<start_of_turn>")]
    assert gemma.encode_chat("<bos><start_of_turn>user\nHi").count(gemma.bos_id) == 1


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [b"\xff\xfe bad utf-8", "lone \ud800 surrogate", 42, None, ["list"]])
def test_bad_text_is_a_clear_error(models, bad):
    with pytest.raises(InvalidRequest):
        models["smollm2"].tokenize(bad)


def test_utf8_bytes_are_accepted(models):
    tokenizer = models["gemma3"].tokenizer
    assert tokenizer.encode("café 😀".encode("utf-8")) == tokenizer.encode("café 😀")


def test_huge_text_is_refused_quickly(models, monkeypatch):
    import refllm.tokenizer.tokenizer as module

    monkeypatch.setattr(module, "MAX_TEXT_CHARS", 1000)
    with pytest.raises(InvalidRequest, match="too long"):
        models["smollm2"].tokenize("x" * 1001)


@pytest.mark.parametrize("bad_id", [-1, 49152, 10**12, "7", 1.5])
def test_bad_token_ids_are_clear_errors(models, bad_id):
    with pytest.raises(InvalidRequest):
        models["smollm2"].detokenize([1, bad_id])


# ----------------------------------------------------------------------------- construction


def _tiny_vocab(**changes) -> Vocab:
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "ab"]
    fields = dict(model="gpt2", pre="default", tokens=tokens, types=np.array([2, 3, 3, 1, 1, 1], dtype=np.int32),
                  scores=np.zeros(6, np.float32), merges=["a b"], bos_id=1, eos_id=2, unk_id=0, pad_id=None,
                  eot_id=None, add_bos=False, add_eos=False, add_space_prefix=False,
                  token_to_id={t: i for i, t in enumerate(tokens)})
    fields.update(changes)
    return Vocab(**fields)


def test_unknown_pre_tokenizer_is_refused():
    with pytest.raises(UnsupportedModel, match="pre-tokenizer 'no-such-pre'"):
        Tokenizer(_tiny_vocab(pre="no-such-pre"))


def test_merges_split_at_first_space_after_first_character():
    assert split_merge("Ġ t") == ("Ġ", "t") and split_merge("ab") is None and split_merge("a  b") == ("a", " b")
    assert split_merge("  ") == (" ", "")  # as llama.cpp reads it (a merge that can never apply)


def test_sentencepiece_merges_follow_scores():
    """SPM merges by score: 'a'+'b' -> 'ab' only because 'ab' is a token; bytes fall back to <0xXX>."""
    tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁ab"] + [f"<0x{b:02X}>" for b in range(256)]
    types = np.array([2, 3, 3, 1, 1, 1, 1, 1] + [6] * 256, dtype=np.int32)
    scores = np.array([0, 0, 0, -1, -2, -3, -4, -5] + [0] * 256, dtype=np.float32)
    vocab = _tiny_vocab(model="llama", tokens=tokens, types=types, scores=scores, merges=[], add_bos=True,
                        add_space_prefix=True, token_to_id={t: i for i, t in enumerate(tokens)})
    tokenizer = Tokenizer(vocab)
    assert tokenizer.encode("ab") == [1, 7]  # <s> "▁ab" (space prefix added)
    assert tokenizer.encode("ab c", add_special=False) == [7, 3, tokenizer.token_id("<0x63>")]
    # llama.cpp strips the prefix space from the first token only: after "<s>" it stays
    assert tokenizer.decode([7, 3, 107]) == "ab c" and tokenizer.decode([1, 7]) == "<s> ab"
    decoder = tokenizer.decoder()
    assert [decoder.push(i) for i in (7, 3, 107)] == ["ab", " ", "c"]


def test_gguf_without_tokenizer_is_unsupported(tmp_path):
    from refllm.tokenizer import vocab_from_gguf

    class Fake:
        path = tmp_path / "x.gguf"
        metadata = {"general.architecture": "llama"}

    with pytest.raises(RefllmError, match="no tokenizer"):
        vocab_from_gguf(Fake())
    Fake.metadata = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}
    with pytest.raises(UnsupportedModel, match="'bert' is not supported"):
        vocab_from_gguf(Fake())
