"""Write golden logits from independent engines: llama.cpp (llama-cpp-python) and HF transformers.

    python tools/golden_logits.py                      # both real models, both engines
    python tools/golden_logits.py --models smollm2 --engines llamacpp
    python tools/golden_logits.py --models smollm2,gemma3 --engines hf-greedy   # add HF's greedy text only
    python tools/golden_logits.py --models smollm2,gemma3 --agreement llamacpp,hf,refllm,refllm-llamacpp-rounding
    python tools/make_golden.py logits ...             # the same, through the dispatcher

Needs the ``reference`` extra (llama-cpp-python, torch, transformers); refllm's runtime
never imports them, and the tests only read the files written here.

For each model and engine one compressed ``golden/logits/<model>.<engine>.npz`` holds,
for prompt number i:

    p{i}_ids              int32[n]          the prompt's token ids (llama.cpp's tokenizer;
                                            every engine is fed these same ids)
    p{i}_topk_ids         int32[n, K]       the K most likely next tokens at every position
    p{i}_topk_logprobs    float32[n, K]     their log-probabilities (log-softmax of the logits)
    p{i}_last_logprobs    float16[n_vocab]  the full log-softmax at the last position (float32
                                            for HF; only for the first few prompts of a model)
    p{i}_greedy           int32[m]          the engine's greedy continuation (argmax, its own KV
                                            cache), GREEDY_TOKENS tokens or up to end-of-generation
                                            (llama.cpp's end-of-generation tokens for both engines)
    p{i}_greedy_topk_ids  int32[m, 8]       HF only: its 8 most likely tokens at each greedy step
    p{i}_greedy_topk_logprobs float32[m, 8] ... and their log-probs (the near-ties where texts part)

The tiny K-quant models (random blocks, see TINY_F32_TWIN_TYPES) get a third file,
``<model>.llamacpp-f32.npz``: llama.cpp on the model's F32 "twin" (every tensor dequantized
by gguf-py), the same arrays without ``p{i}_greedy``.  It is their float32 reference: it
shows where llama.cpp's 8-bit activations (Q8_K) alone flip a near-tie.

``manifest.json`` beside them records the prompts, engine versions and the command.

``--agreement`` writes ``greedy_agreement.json`` instead: for each prompt of the real models,
where the greedy continuations of llama.cpp, HF, refllm (Numba kernels) and refllm with
llama.cpp's roundings (refllm/conformance/llamacpp_rounding.py) first part, pair by pair,
each engine's top-2 margin there, and how many continuations each pair has identical.
refllm's numbers are those of the checkout it ran in (its commit is recorded).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from a checkout
OUT_DIR = REPO / "golden" / "logits"
TOP_K = 32
GREEDY_TOKENS = 64
N_CTX = 1024  # the longest prompt (~700 tokens) + the greedy continuation
N_BATCH = 256  # llama.cpp's batch: its logits buffers are N_BATCH x n_vocab floats
CHUNK = 64  # positions turned into log-probs at a time
GREEDY_TOP_K = 8  # alternatives kept at each HF greedy step: enough to tell a near-tie

# --------------------------------------------------------------------------- prompts

PLAIN_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are red, blue and",
    "Water boils at 100 degrees Celsius at sea level. At the top of Mount Everest, it boils at",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Photosynthesis is the process by which plants",
    "Le chat est assis sur le tapis. The cat is sitting on the",
]
CHAT_QUESTIONS = [
    "What is the largest planet in the solar system?",
    "Write a haiku about autumn leaves.",
]


def long_prompt() -> str:
    """About 600 tokens (Gemma 3): longer than its 512-token sliding window."""
    sentences = [
        f"Note {i}: the {c} box on shelf {i % 7} holds {3 * i + 1} marbles."
        for i, c in zip(range(32), ["red", "green", "blue", "yellow", "white", "black"] * 6)
    ]
    return " ".join(sentences) + " Question: how many marbles are in the box of note 12? Answer:"


def chat_prompt(arch: str, question: str) -> str:
    """The model's own chat format, written out (Gemma's GGUF carries no template)."""
    if arch == "gemma3":
        return f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"
    return (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def prompts_for(arch: str, long: bool) -> list[str]:
    prompts = PLAIN_PROMPTS + [chat_prompt(arch, q) for q in CHAT_QUESTIONS]
    if long:
        prompts.append(long_prompt())
    return prompts


# --------------------------------------------------------------------------- shared


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax over the last axis."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def top_k(logprobs: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """[n, n_vocab] -> (ids int32[n, k], logprobs float32[n, k]), most likely first."""
    ids = np.argsort(-logprobs, axis=-1, kind="stable")[:, :k]
    return ids.astype(np.int32), np.take_along_axis(logprobs, ids, axis=-1).astype(np.float32)


def pack(arrays: dict, i: int, ids: np.ndarray, logits: np.ndarray, full_last: bool, full_dtype=np.float16) -> None:
    """Store prompt i's top-k at every position (+ the full last position) into ``arrays``.

    Done CHUNK positions at a time: Gemma's 262144-token rows are 1 MB each in float32.
    """
    top_ids, top_logprobs = [], []
    for start in range(0, len(logits), CHUNK):
        logprobs = log_softmax(logits[start : start + CHUNK])  # [chunk, n_vocab]
        chunk_ids, chunk_logprobs = top_k(logprobs)
        top_ids.append(chunk_ids)
        top_logprobs.append(chunk_logprobs)
    arrays[f"p{i}_ids"] = np.asarray(ids, dtype=np.int32)
    arrays[f"p{i}_topk_ids"] = np.concatenate(top_ids)
    arrays[f"p{i}_topk_logprobs"] = np.concatenate(top_logprobs)
    if full_last:
        arrays[f"p{i}_last_logprobs"] = log_softmax(logits[-1:])[0].astype(full_dtype)


# --------------------------------------------------------------------------- engines


def llama_cpp_tokenize(model_path: Path, prompts: list[str]) -> list[list[int]]:
    import llama_cpp

    llm = llama_cpp.Llama(str(model_path), n_ctx=N_CTX, vocab_only=True, verbose=False)
    return [llm.tokenize(p.encode("utf-8"), add_bos=True, special=True) for p in prompts]


def llama_cpp_golden(model_path: Path, token_lists: list[list[int]], full_last: int, greedy_tokens: int = GREEDY_TOKENS,
                     greedy_topk: bool = False) -> dict:  # fmt: skip
    """llama.cpp's logits at every prompt position, then a greedy continuation
    (with greedy_topk, also its top tokens at each greedy step: see greedy_decode)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model_path), n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH, logits_all=True, n_threads=1, verbose=False)
    vocab = llm._model.vocab

    def step(token_id: int) -> np.ndarray:
        llm.eval([token_id])
        return llm.scores[llm.n_tokens - 1]  # [n_vocab]

    arrays: dict[str, np.ndarray] = {}
    for i, ids in enumerate(token_lists):
        llm.reset()
        llm.eval(ids)
        logits = llm.scores[: len(ids)]  # [n, n_vocab] float32, a view
        pack(arrays, i, ids, logits, full_last=i < full_last)
        if not greedy_tokens:
            print(f"  llama.cpp prompt {i}: {len(ids)} tokens", flush=True)
            continue
        first = logits[-1].copy()
        del logits
        greedy = greedy_decode(first, step, lambda t: llama_cpp.llama_token_is_eog(vocab, t), greedy_tokens)
        arrays[f"p{i}_greedy"] = greedy["tokens"]
        if greedy_topk:
            arrays[f"p{i}_greedy_topk_ids"] = greedy["topk_ids"]
            arrays[f"p{i}_greedy_topk_logprobs"] = greedy["topk_logprobs"]
        print(f"  llama.cpp prompt {i}: {len(ids)} tokens, greedy {len(greedy['tokens'])}", flush=True)
    return arrays


def greedy_decode(first_logits: np.ndarray, step, is_end, n_tokens: int) -> dict[str, np.ndarray]:
    """A greedy continuation: the argmax of each step's logits, fed back through ``step``.

    first_logits float32[n_vocab] (the prompt's last position); ``step(token_id)`` evaluates one token
    and returns the next logits; ``is_end(token_id)`` says end-of-generation.  Stops after n_tokens
    or after an end-of-generation token, which is kept (llama.cpp's loop).  Returns
        tokens          int32[m]                 the continuation
        topk_ids        int32[m, GREEDY_TOP_K]   each step's most likely tokens (topk_ids[:, 0] == tokens)
        topk_logprobs   float32[m, GREEDY_TOP_K] their log-probs: [:, 0] - [:, 1] is the step's top-2 margin
    """
    tokens, top_ids, top_logprobs = [], [], []
    logits = first_logits
    while len(tokens) < n_tokens:
        ids, logprobs = top_k(log_softmax(logits[None, :]), GREEDY_TOP_K)  # [1, K] each
        next_id = int(np.argmax(logits))  # == ids[0, 0] unless two logits are exactly equal: argmax's first
        tokens.append(next_id)
        top_ids.append(ids[0])
        top_logprobs.append(logprobs[0])
        if is_end(next_id) or len(tokens) == n_tokens:
            break
        logits = step(next_id)
    return {"tokens": np.array(tokens, dtype=np.int32), "topk_ids": np.array(top_ids), "topk_logprobs": np.array(top_logprobs)}


def hf_golden(model_path: Path, token_lists: list[list[int]], full_last: int, greedy_tokens: int = GREEDY_TOKENS) -> dict:
    """HF transformers' float32 logits (it dequantizes the GGUF to float32) and its greedy continuations
    (its own KV cache, one token at a time; the same end-of-generation tokens as llama.cpp)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path.parent), gguf_file=model_path.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    end_ids = end_of_generation_ids(model_path)
    arrays: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, ids in enumerate(token_lists):
            out = model(torch.tensor([ids]), use_cache=True)
            logits = out.logits[0].float().numpy()  # [n, n_vocab]
            pack(arrays, i, ids, logits, full_last=i < full_last, full_dtype=np.float32)
            if greedy_tokens <= 0:
                print(f"  HF prompt {i}: {len(ids)} tokens", flush=True)
                continue

            cache = out.past_key_values

            def step(token_id: int) -> np.ndarray:
                nonlocal cache
                out = model(torch.tensor([[token_id]]), past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                return out.logits[0, -1].float().numpy()  # [n_vocab]

            greedy = greedy_decode(logits[-1], step, end_ids.__contains__, greedy_tokens)
            arrays[f"p{i}_greedy"] = greedy["tokens"]
            arrays[f"p{i}_greedy_topk_ids"] = greedy["topk_ids"]
            arrays[f"p{i}_greedy_topk_logprobs"] = greedy["topk_logprobs"]
            print(f"  HF prompt {i}: {len(ids)} tokens, greedy {len(greedy['tokens'])}", flush=True)
    return arrays


def end_of_generation_ids(model_path: Path) -> set[int]:
    """Every token llama.cpp's ``llama_token_is_eog`` stops at (EOS, end-of-turn and the like)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    return {i for i in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_token_is_eog(vocab, i)}


def engine_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("llama_cpp_python", "xllamacpp", "torch", "transformers", "gguf", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


# --------------------------------------------------------------------------- models


def model_sources() -> dict[str, tuple[Path, str, int]]:
    """name -> (GGUF path, architecture, how many prompts keep a full last-position vector)."""
    from refllm.packaged_models import gemma3_path, smollm2_path

    # Gemma's vocabulary is 262144: a full float16 vector is 512 KB, so keep fewer.
    return {"smollm2": (smollm2_path(), "llama", 11), "gemma3": (gemma3_path(), "gemma3", 4)}


TINY_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")
# The K-quants are random valid blocks (tools/make_tiny_models.py); llama.cpp multiplies them with
# activations quantized to Q8_K, which moves log-probs a little more than Q8_0 does (KL <= ~1e-3).
# (A KL of ~5 nats once seen on Q4_K was a stale file: llama.cpp ran on a model written before
# the generator centred K-quant weights (dmin = 7.5 d), refllm on the current one; the sha256 in
# the manifest now catches that.)
TINY_TYPES = ("F16", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
TINY_GREEDY_TOKENS = 32
# Random-block K-quants: llama.cpp's Q8_K activations flip near-ties (top-2 margins up to ~0.23
# nats measured) where Q8_0's do not, so these also get llama.cpp on the F32 twin as a float32 reference.
TINY_F32_TWIN_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def tiny_prompts() -> list[str]:
    """Tiny models see a 1024-token vocabulary: text splits into many tokens.

    The last prompt (~100 tokens) is longer than tiny gemma3's 32-token sliding window.
    """
    return PLAIN_PROMPTS[:3] + [" ".join(PLAIN_PROMPTS[3:])]


def tiny_sources(out_dir: Path, types: tuple[str, ...] = TINY_TYPES) -> dict[str, tuple[Path, str, int]]:
    """Write the tiny synthetic models (tools/make_tiny_models.py, seed 0) of ``types`` into ``out_dir``."""
    sys.path.insert(0, str(REPO / "tools"))
    import make_tiny_models

    sources = {}
    for arch in TINY_ARCHITECTURES:
        for qtype in types:
            name = f"tiny-{arch}-{qtype}"
            path = make_tiny_models.write_tiny_model(out_dir / f"{name}.gguf", arch, qtype, seed=0)
            sources[name] = (Path(path), arch, len(tiny_prompts()))
    return sources


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_golden(name: str, path: Path, arch: str, full_last: int, engines: list[str], out_dir: Path, long: bool,
                 tiny: bool = False) -> dict:  # fmt: skip
    prompts = tiny_prompts() if tiny else prompts_for(arch, long)
    token_lists = llama_cpp_tokenize(path, prompts)
    out_dir.mkdir(parents=True, exist_ok=True)
    entry = {"gguf": path.name, "architecture": arch, "prompts": prompts, "files": {}}
    if tiny:
        entry["sha256"] = sha256(path)  # the tests rebuild the model and check it is the same file
    for engine in engines:
        t0 = time.time()
        print(f"{name}: {engine} ...", flush=True)
        if engine == "llamacpp":
            greedy_tokens = TINY_GREEDY_TOKENS if tiny else GREEDY_TOKENS
            arrays = llama_cpp_golden(path, token_lists, full_last, greedy_tokens)
        elif engine == "llamacpp-f32":  # llama.cpp on the gguf-py-dequantized F32 twin, no greedy text
            from check_tiny_models_llamacpp import write_f32_twin

            twin = write_f32_twin(path, path.with_name(path.stem + "-f32-twin.gguf"))
            arrays = llama_cpp_golden(twin, token_lists, full_last, greedy_tokens=0)
        elif engine == "hf-greedy":  # only add HF's greedy continuations to the existing HF file
            engine, arrays = "hf", add_hf_greedy(out_dir / f"{name}.hf.npz", path, token_lists, full_last)
        else:
            arrays = hf_golden(path, token_lists, full_last)
        file = out_dir / f"{name}.{engine}.npz"
        np.savez_compressed(file, **arrays)
        entry["files"][engine] = {"file": file.name, "bytes": file.stat().st_size, "seconds": round(time.time() - t0, 1)}
    return entry


def add_hf_greedy(file: Path, model_path: Path, token_lists: list[list[int]], full_last: int) -> dict:
    """The arrays of an existing HF file plus HF's greedy continuations, its other arrays kept as they were.

    HF recomputes the prompt arrays on the way (it needs the prompt's KV cache); any that come out
    different from the stored ones are reported, and the stored ones are kept.
    """
    stored = dict(np.load(file))
    fresh = hf_golden(model_path, token_lists, full_last)
    changed = [key for key in stored if not np.array_equal(stored[key], fresh.get(key))]
    print(f"  {file.name}: {len(stored) - len(changed)} of {len(stored)} stored arrays recomputed bit-identical; "
          f"differ: {changed or 'none'}", flush=True)  # fmt: skip
    return {**stored, **{key: value for key, value in fresh.items() if "_greedy" in key}}


# --------------------------------------------------------------------------- greedy agreement

# Whose greedy continuations greedy_agreement.json compares, and which pairs.
AGREEMENT_ENGINES = ("llamacpp", "hf", "refllm", "refllm-llamacpp-rounding")
AGREEMENT_PAIRS = [("refllm", "llamacpp"), ("hf", "llamacpp"), ("refllm", "hf"),
                   ("refllm-llamacpp-rounding", "llamacpp"), ("refllm-llamacpp-rounding", "hf")]  # fmt: skip


def refllm_greedy(model_path: Path, token_lists: list[list[int]], ops_name: str) -> list[dict]:
    """refllm's greedy continuations: the default Numba kernels ("numba"), or the NumPy reference with
    llama.cpp's roundings (refllm.conformance.llamacpp_rounding, "llamacpp-rounding")."""
    import refllm
    from refllm.conformance.llamacpp_rounding import LLAMACPP_ROUNDING
    from refllm.kernels.reference import get_backend

    transformer = refllm.load(model_path).transformer
    ops = LLAMACPP_ROUNDING if ops_name == "llamacpp-rounding" else get_backend(ops_name)
    end_ids = end_of_generation_ids(model_path)
    continuations = []
    for i, ids in enumerate(token_lists):
        t0 = time.time()
        cache = transformer.new_cache(len(ids) + GREEDY_TOKENS, ops)
        first = ops.to_host(transformer.forward(ids, cache, ops))  # [n_vocab], the prompt's last position
        continuations.append(
            greedy_decode(first, lambda t: ops.to_host(transformer.forward([t], cache, ops)), end_ids.__contains__, GREEDY_TOKENS)
        )
        print(f"  refllm ({ops_name}) prompt {i}: greedy {len(continuations[-1]['tokens'])} in {time.time() - t0:.1f} s", flush=True)
    return continuations


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """Index of the first token where two continuations part (the shorter one's length if one stopped
    earlier), None if they are identical."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    if differ.size:
        return int(differ[0])
    return None if len(a) == len(b) else n


def top2_margin(continuation: dict, j: int) -> float | None:
    """Nats between an engine's top-2 tokens at greedy step j (None past its end)."""
    if j >= len(continuation["tokens"]):
        return None
    logprobs = continuation["topk_logprobs"][j]
    return round(float(logprobs[0] - logprobs[1]), 4)


def greedy_agreement(name: str, model_path: Path, out_dir: Path, engines: tuple[str, ...] = AGREEMENT_ENGINES) -> dict:
    """Per prompt, where each pair of engines' greedy continuations first part, and each engine's top-2
    margin there; per pair, how many continuations are identical.

    llama.cpp is run again (its continuation must equal the stored one), HF's is read from its file.
    """
    golden_llama, golden_hf = np.load(out_dir / f"{name}.llamacpp.npz"), np.load(out_dir / f"{name}.hf.npz")
    n_prompts = sum(1 for key in golden_llama.files if key.endswith("_greedy"))
    token_lists = [golden_llama[f"p{i}_ids"].tolist() for i in range(n_prompts)]

    def stored(golden, i: int) -> dict:
        return {"tokens": golden[f"p{i}_greedy"], "topk_ids": golden[f"p{i}_greedy_topk_ids"],
                "topk_logprobs": golden[f"p{i}_greedy_topk_logprobs"]}  # fmt: skip

    continuations: dict[str, list[dict]] = {"hf": [stored(golden_hf, i) for i in range(n_prompts)]}
    seconds = {}
    for engine in engines:
        if engine == "hf":
            continue  # read from its golden file
        t0 = time.time()
        if engine == "llamacpp":
            rerun = llama_cpp_golden(model_path, token_lists, full_last=0, greedy_topk=True)
            continuations[engine] = [stored(rerun, i) for i in range(n_prompts)]
            for i in range(n_prompts):
                assert np.array_equal(rerun[f"p{i}_greedy"], golden_llama[f"p{i}_greedy"]), f"{name} prompt {i}: llama.cpp's rerun differs"
        elif engine.startswith("refllm"):
            continuations[engine] = refllm_greedy(model_path, token_lists, engine.removeprefix("refllm-") if "-" in engine else "numba")
        seconds[engine] = round(time.time() - t0, 1)

    prompts = []
    for i in range(n_prompts):
        row = {"prompt": i, "n_prompt_tokens": len(token_lists[i]), "pairs": {}}
        for a, b in AGREEMENT_PAIRS:
            if a not in continuations or b not in continuations:
                continue
            ca, cb = continuations[a][i], continuations[b][i]
            j = first_difference(ca["tokens"], cb["tokens"])
            pair = {"first_difference": j}
            if j is not None:
                pair["top2_margin"] = {a: top2_margin(ca, j), b: top2_margin(cb, j)}
            row["pairs"][f"{a} vs {b}"] = pair
        prompts.append(row)
    identical = {
        pair: sum(row["pairs"][pair]["first_difference"] is None for row in prompts) for pair in prompts[0]["pairs"]
    }
    return {"n_prompts": n_prompts, "identical": identical, "seconds": seconds, "prompts": prompts}


def write_greedy_agreement(names: list[str], out_dir: Path, engines: tuple[str, ...], command: str) -> None:
    """greedy_agreement.json: greedy_agreement() for each real model (entries of other models kept)."""
    import subprocess

    path = out_dir / "greedy_agreement.json"
    report = json.loads(path.read_text()) if path.exists() else {"models": {}}
    sources = model_sources()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report.update({
        "about": "Where the 64-token greedy continuations of the golden prompts part, engine pair by pair: "
                 "first_difference = index of the first differing token (null: identical); top2_margin = each "
                 "engine's log-prob gap between its top two tokens at that index (nats). refllm = default Numba "
                 "kernels; refllm-llamacpp-rounding = refllm's NumPy reference with llama.cpp's roundings "
                 "(refllm/conformance/llamacpp_rounding.py). All engines are fed llama.cpp's prompt token ids and "
                 "stop at llama.cpp's end-of-generation tokens.",
        "command": command,
        "versions": engine_versions(),
        "greedy_tokens": GREEDY_TOKENS,
    })  # fmt: skip
    for name in names:
        print(f"{name}: greedy agreement ...", flush=True)
        entry = greedy_agreement(name, sources[name][0], out_dir, engines)
        entry["refllm_commit"] = commit  # refllm's kernels move; the numbers are for this commit (+ the working tree)
        report["models"][name] = entry
        print(f"  identical: {entry['identical']}", flush=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


ROPE_CASES = [  # (rope_type, head dim, base, HF rope_parameters)
    ("linear", 128, 1e6, {"factor": 8.0}),
    ("yarn", 128, 1e6, {"factor": 4.0, "original_max_position_embeddings": 32768, "beta_fast": 32.0, "beta_slow": 1.0}),
    ("yarn", 64, 1e4, {"factor": 16.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0}),
]


def write_rope_golden(out_dir: Path) -> dict:
    """HF transformers' RoPE inverse frequencies and attention factor for scaled RoPE."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cases = []
    for kind, head_dim, base, params in ROPE_CASES:
        config = LlamaConfig(
            hidden_size=head_dim * 8, num_attention_heads=8, head_dim=head_dim, max_position_embeddings=131072,
            rope_parameters={"rope_type": kind, "rope_theta": base, **params},
        )
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
        cases.append({"type": kind, "head_dim": head_dim, "base": base, "parameters": params,
                      "inv_freq": [float(v) for v in inv_freq], "attention_factor": float(attention_factor)})  # fmt: skip
    (out_dir / "rope.json").write_text(json.dumps({"reference": "transformers ROPE_INIT_FUNCTIONS", "cases": cases}, indent=1) + "\n")
    return {"file": "rope.json"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,gemma3", help="comma-separated: smollm2, gemma3, tiny, rope")
    parser.add_argument("--engines", default="llamacpp,hf",
                        help="comma-separated: llamacpp, hf; hf-greedy adds only HF's greedy continuations to its file")
    parser.add_argument("--agreement", default="",
                        help="write greedy_agreement.json for --models with these comma-separated engines "
                             f"(of {','.join(AGREEMENT_ENGINES)}) instead of golden files")  # fmt: skip
    parser.add_argument("--tiny-types", default=",".join(TINY_TYPES), help="comma-separated weight types of the tiny models")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    if args.agreement:
        command = "python tools/golden_logits.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_greedy_agreement(args.models.split(","), args.out, tuple(args.agreement.split(",")), command)
        return 0
    sources = model_sources()
    if "tiny" in args.models.split(","):
        import tempfile

        tiny_types = tuple(args.tiny_types.split(","))
        sources.update(tiny_sources(Path(tempfile.mkdtemp(prefix="refllm-tiny-")), tiny_types))
    engines = args.engines.split(",")
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": {}}
    manifest.update(
        {
            "command": "python tools/golden_logits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "versions": engine_versions(),
            "top_k": TOP_K,
            "greedy_tokens": GREEDY_TOKENS,
            "notes": "token ids from llama.cpp's tokenizer (add_bos per GGUF, special tokens parsed); "
            "every engine sees the same ids. logprobs = log_softmax(logits). "
            "llama.cpp: llama-cpp-python Llama(logits_all=True), CPU, greedy = argmax with single-token decode "
            "until 64 tokens or an end-of-generation token. "
            "HF: AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32, attn_implementation='eager'); "
            "its greedy continuation (p{i}_greedy, with its top-8 at each step) the same way, with its own KV cache "
            "and llama.cpp's end-of-generation tokens.",
        }
    )
    if "rope" in args.models.split(","):
        manifest["rope"] = write_rope_golden(args.out)
    names = [n for n in args.models.split(",") if n not in ("tiny", "rope")]
    if "tiny" in args.models.split(","):
        names += [n for n in sources if n.startswith("tiny-")]
    for name in names:
        path, arch, full_last = sources[name]
        tiny = name.startswith("tiny-")
        # tiny models: llama.cpp only (HF can't read every tiny type; the issue asks llama.cpp)
        engines_here = ["llamacpp"] if tiny else engines
        if tiny and name.rsplit("-", 1)[1] in TINY_F32_TWIN_TYPES:
            engines_here.append("llamacpp-f32")
        entry = write_golden(name, path, arch, full_last, engines_here, args.out, long=arch == "gemma3", tiny=tiny)
        entry["command"] = manifest["command"]
        for file_entry in entry["files"].values():  # each file remembers the command that wrote it
            file_entry["command"] = manifest["command"]
        old = manifest["models"].get(name, {})
        entry["files"] = {**old.get("files", {}), **entry["files"]}
        manifest["models"][name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
