"""``refllm.load(path_or_name) -> Model``: one loaded GGUF with its tokenizer (and, later, its weights).

This is the public object other parts and outside checks use:

    model = refllm.load("smollm2")              # a catalog/store name or a .gguf path
    ids = model.tokenize("Hello", add_special=True, parse_special=False)
    text = model.detokenize(ids)
    prompt = model.apply_chat_template([{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from refllm.errors import ModelNotFound
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

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt)

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


def load(path_or_name: str | os.PathLike) -> Model:
    """Open a model by GGUF path or by name; nothing heavy happens until it is used."""
    path = resolve_model_path(path_or_name)
    return Model(read(path), name=str(path_or_name) if not Path(path_or_name).suffix else None)
