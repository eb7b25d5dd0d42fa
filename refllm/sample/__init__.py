"""Sampling: options with Ollama's names, the sampler chain, stop sequences.

    options.py   Options (validated from a request's dict)
    samplers.py  one small function per sampler (penalties, top_k, typical_p, top_p, min_p, temperature, Mirostat)
    sampler.py   Sampler: runs the chain in llama.cpp's order with a seeded generator; token_logprob
    stop.py      StopMatcher: finds stop sequences across token boundaries while streaming
"""

from refllm.sample.options import Options
from refllm.sample.sampler import Sampler, TokenLogprob, token_logprob
from refllm.sample.stop import StopMatcher

__all__ = ["Options", "Sampler", "StopMatcher", "TokenLogprob", "token_logprob"]
