"""Write golden logits from independent engines: llama.cpp (llama-cpp-python) and HF transformers.

    python tools/golden_logits.py                      # both real models, both engines
    python tools/golden_logits.py --models smollm2 --engines llamacpp
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
    p{i}_greedy           int32[m]          llama.cpp's greedy continuation (argmax, its own KV
                                            cache), GREEDY_TOKENS tokens or up to end-of-generation

The tiny K-quant models (random blocks, see TINY_F32_TWIN_TYPES) get a third file,
``<model>.llamacpp-f32.npz``: llama.cpp on the model's F32 "twin" (every tensor dequantized
by gguf-py), the same arrays without ``p{i}_greedy``.  It is their float32 reference: it
shows where llama.cpp's 8-bit activations (Q8_K) alone flip a near-tie.

``manifest.json`` beside them records the prompts, engine versions and the command.
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


def llama_cpp_golden(model_path: Path, token_lists: list[list[int]], full_last: int, greedy_tokens: int = GREEDY_TOKENS) -> dict:
    """llama.cpp's logits at every prompt position, then a greedy continuation."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model_path), n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH, logits_all=True, n_threads=1, verbose=False)
    arrays: dict[str, np.ndarray] = {}
    for i, ids in enumerate(token_lists):
        llm.reset()
        llm.eval(ids)
        logits = llm.scores[: len(ids)]  # [n, n_vocab] float32, a view
        pack(arrays, i, ids, logits, full_last=i < full_last)

        greedy: list[int] = []
        next_id = int(np.argmax(logits[-1]))
        del logits
        while len(greedy) < greedy_tokens:
            greedy.append(next_id)
            if llama_cpp.llama_token_is_eog(llm._model.vocab, next_id):
                break
            llm.eval([next_id])
            next_id = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if greedy_tokens:
            arrays[f"p{i}_greedy"] = np.array(greedy, dtype=np.int32)
        print(f"  llama.cpp prompt {i}: {len(ids)} tokens, greedy {len(greedy)}", flush=True)
    return arrays


def hf_golden(model_path: Path, token_lists: list[list[int]], full_last: int, greedy_tokens: int = 0) -> dict:
    """HF transformers' float32 logits (it dequantizes the GGUF to float32); with greedy_tokens > 0
    also its greedy continuations (slow on a shared 2-core machine, so not written by default)."""
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
            # greedy continuation with HF's own KV cache, one token at a time
            greedy: list[int] = []
            next_id, past = int(np.argmax(logits[-1])), out.past_key_values
            while len(greedy) < greedy_tokens:
                greedy.append(next_id)
                if next_id in end_ids:
                    break
                out = model(torch.tensor([[next_id]]), past_key_values=past, use_cache=True)
                next_id, past = int(out.logits[0, -1].argmax()), out.past_key_values
            arrays[f"p{i}_greedy"] = np.array(greedy, dtype=np.int32)
            print(f"  HF prompt {i}: {len(ids)} tokens, greedy {len(greedy)}", flush=True)
    return arrays


def end_of_generation_ids(model_path: Path) -> set[int]:
    """EOS and the chat end-of-turn tokens, read from the GGUF (as llama.cpp's is_eog)."""
    from refllm.gguf import read

    metadata = read(model_path).metadata
    tokens = metadata["tokenizer.ggml.tokens"]
    ends = {int(metadata["tokenizer.ggml.eos_token_id"])}
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if key in metadata:
            ends.add(int(metadata[key]))
    for text in ("<|im_end|>", "<end_of_turn>", "<|endoftext|>", "<|eot_id|>"):
        ends.update(i for i in range(min(len(tokens), 300)) if tokens[i] == text)
    return ends


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
        else:
            arrays = hf_golden(path, token_lists, full_last)
        file = out_dir / f"{name}.{engine}.npz"
        np.savez_compressed(file, **arrays)
        entry["files"][engine] = {"file": file.name, "bytes": file.stat().st_size, "seconds": round(time.time() - t0, 1)}
    return entry


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
    parser.add_argument("--engines", default="llamacpp,hf", help="comma-separated: llamacpp, hf")
    parser.add_argument("--tiny-types", default=",".join(TINY_TYPES), help="comma-separated weight types of the tiny models")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

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
            "HF: AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32, attn_implementation='eager').",
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
        old = manifest["models"].get(name, {})
        entry["files"] = {**old.get("files", {}), **entry["files"]}
        manifest["models"][name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
