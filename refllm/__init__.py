"""refllm: a readable, verified reference implementation of a local LLM runtime.

Flow, one concept per module:
    gguf (file format) -> quant (dequantizers) -> kernels (Numba fast paths)
    -> model (forward pass per architecture) -> sample / generate
    -> engine (scheduling, sessions) -> store, server, cli
"""

__version__ = "0.1.0"


def load(path_or_name):
    """Open a model by GGUF path or name: ``refllm.load("smollm2").tokenize("Hi")``."""
    from refllm.model.loaded import load as _load

    return _load(path_or_name)
