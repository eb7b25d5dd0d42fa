"""Conformance: score another runtime against refllm, and offline evaluation.

    refllm conformance MODEL --endpoint URL     numeric: the other runtime's top-k logprobs vs refllm's
    refllm conformance --api-only URL           API: fields, framing and error shapes of a server
    refllm eval perplexity|kld MODEL FILE       perplexity, and KL divergence against saved base logits

Modules, in reading order:

    suite.py      the fixed, versioned prompt suite (suites/v1.json)
    remote.py     talking to the other runtime (Ollama, OpenAI, llama.cpp APIs) -> RemoteCompletion
    numeric.py    lining its tokens up with refllm's and scoring every position -> PromptScore
    report.py     tables, the summary verdict and --json
    tokens.py     tokenizer conformance through /tokenize and /detokenize
    api_checks.py the --api-only checks
    evaluate.py   perplexity and KL divergence over a text file
    llamacpp_rounding.py  where llama.cpp rounds and float32 engines do not, op by op
"""

from refllm.errors import RefllmError


class ConformanceError(RefllmError):
    """The other runtime could not be reached or answered in a shape we cannot score."""
