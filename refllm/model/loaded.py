"""``refllm.load(path_or_name) -> Model``: one loaded GGUF with its tokenizer (and, later, its weights).

This is the public object other parts and outside checks use:

    model = refllm.load("smollm2")              # a catalog/store name or a .gguf path
    ids = model.tokenize("Hello", add_special=True, parse_special=False)
    text = model.detokenize(ids)
    prompt = model.apply_chat_template([{"role": "user", "content": "Hi"}])

    cache = model.new_cache(2048)                # KVCache: .n_past, .n_ctx, .truncate(n)
    logits = model.forward(ids, cache)           # float32[n_vocab], last position; advances the cache
    logits = model.forward([next_id], cache)     # decode: one token at a time
    all_logits = model.logits(ids)               # float32[len(ids), n_vocab], fresh context
    model.backend = "numba"                      # "numba" (default), "numpy" (reference) or "cuda"
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from refllm.gguf import GGUFFile, read


def resolve_model_path(path_or_name: str | os.PathLike) -> Path:
    """A store name (``name``, ``name:tag``), else a GGUF path, else a built-in catalog name.

    ``refllm.store.resolve`` does the looking up; it also returns the store model's defaults.
    """
    from refllm.store import resolve

    return resolve(path_or_name).gguf_path


class Model:
    """A loaded model. Cheap to create: the GGUF is memory-mapped, parts are built on first use."""

    def __init__(self, gguf_file: GGUFFile, name: str | None = None):
        self.gguf = gguf_file
        self.name = name or gguf_file.path.stem
        self.metadata: dict[str, Any] = gguf_file.metadata
        self.backend: str = "numba"  # which kernels run the forward pass: "numba" (default) or "numpy" (reference)

    @property
    def path(self) -> Path:
        return self.gguf.path

    @property
    def architecture(self) -> str:
        return self.gguf.architecture

    # -- text layer (refllm.tokenizer)

    @cached_property
    def tokenizer(self):
        from refllm.tokenizer import tokenizer_from_gguf

        return tokenizer_from_gguf(self.gguf)

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(ids)

    @cached_property
    def chat_template(self):
        from refllm.tokenizer.chat import chat_template_for

        return chat_template_for(self.gguf, self.tokenizer)

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True,
                            continue_final_message: bool = False) -> str:
        """The prompt text; ``continue_final_message``: it ends inside the last message, for the model to continue."""
        return self.chat_template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                         continue_final_message=continue_final_message)

    # -- forward pass (refllm.model.transformer; one file per architecture family)

    @cached_property
    def transformer(self):
        """Config + quantized weights + the family's forward (built on first use; UnsupportedModel if not runnable).

        Building it also reads the weights into memory in one pass (``GGUFFile.read_in``)
        when the file takes at most half of the memory available, as llama.cpp does at load:
        the first prompt then runs at full speed instead of stopping at page faults.
        """
        from refllm.model.transformer import Transformer

        transformer = Transformer(self.gguf)
        if self.gguf.file_size <= available_memory() // 2:
            self.gguf.read_in()
        return transformer

    @property
    def config(self):
        """``refllm.model.config.ModelConfig``: hyper-parameters from the GGUF metadata."""
        return self.transformer.config

    @property
    def n_vocab(self) -> int:
        return self.transformer.config.n_vocab

    @property
    def n_ctx_train(self) -> int:
        return self.transformer.config.n_ctx_train

    def new_cache(self, n_ctx: int | None = None):
        """An empty ``KVCache`` of ``n_ctx`` positions (default: the training context).

        ``cache.n_past`` (positions filled), ``cache.n_ctx``, ``cache.truncate(n)`` (rewind to n tokens).
        """
        from refllm.kernels.reference import get_backend

        n_ctx = self.n_ctx_train if n_ctx is None else n_ctx
        return self.transformer.new_cache(n_ctx, get_backend(self.backend))  # on the GPU for "cuda"

    def forward(self, token_ids, cache, all_logits: bool = False):
        """Evaluate ``token_ids`` (int[n]) after what ``cache`` holds, and advance the cache by n.

        Returns float32[n_vocab], the logits of the last position, or float32[n, n_vocab] with
        ``all_logits=True``.  Prefill: the whole prompt in one call; decode: one id per call.
        Raises InvalidRequest if the ids don't fit in ``cache.n_ctx - cache.n_past`` or are out of range.
        """
        from refllm.kernels.reference import get_backend

        ops = get_backend(self.backend)
        return ops.to_host(self.transformer.forward(token_ids, cache, ops, all_logits=all_logits))  # NumPy for callers

    def logits(self, token_ids):
        """float32[len(ids), n_vocab]: the logits at every position, in a fresh context."""
        return self.forward(token_ids, self.new_cache(len(token_ids) or 1), all_logits=True)

    def hidden_states(self, token_ids):
        """float32[len(ids), n_embd]: the hidden states after the final norm, in a fresh context (embeddings)."""
        from refllm.kernels.reference import get_backend

        ops = get_backend(self.backend)
        return ops.to_host(self.transformer.hidden_states(token_ids, self.new_cache(len(token_ids) or 1), ops))

    # -- generation (refllm.generate)

    def generate(self, prompt, *, raw: bool = False, stream: bool = False, system: str | None = None, images=None,
                 logprobs: bool = False, top_logprobs: int = 0, session=None, options=None, **more_options):  # fmt: skip
        """Generate text; options use Ollama's names. See ``refllm.generate.generate``.

        Returns a ``GenerationResult`` (``.text``, ``.tokens``, ``.done_reason``, Ollama's stats);
        with ``stream=True`` an iterator of text ``Chunk``s (str) that ends with the result.
        """
        from refllm.generate import generate

        return generate(self, prompt, raw=raw, stream=stream, system=system, images=images, logprobs=logprobs,
                        top_logprobs=top_logprobs, session=session, options=options, **more_options)  # fmt: skip


MEMINFO = "/proc/meminfo"
CGROUP = "/sys/fs/cgroup"  # cgroup v2: memory.max and memory.current of this process's group


def available_memory() -> int:
    """Bytes of memory this process can still get: Linux's MemAvailable, capped by the
    room left under a cgroup (container) limit if there is one; 0 if the OS won't say."""
    try:
        with open(MEMINFO) as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))  # kB
    except (OSError, ValueError, IndexError, StopIteration):
        return 0
    try:
        with open(f"{CGROUP}/memory.max") as f_max, open(f"{CGROUP}/memory.current") as f_current:
            limit = f_max.read().strip()
            if limit != "max":
                available = min(available, int(limit) - int(f_current.read()))
    except (OSError, ValueError):
        pass  # no cgroup v2 memory controller here
    return max(0, available)


def load(path_or_name: str | os.PathLike) -> Model:
    """Open a model by GGUF path or by name; nothing heavy happens until it is used."""
    path = resolve_model_path(path_or_name)
    return Model(read(path), name=str(path_or_name) if not Path(path_or_name).suffix else None)
