"""The runtime plan: what would run a model, and how, resolved without running it.

    plan = build_plan("smollm2", backend="numba", num_ctx=4096)
    plan.support_level     "optimized" | "generic" | "unsupported"   (oLLM's vocabulary)
    plan.ops               op -> OpPlan(backend, fallback_reason)
    plan.quant_types       GGML type -> QuantPlan(n_tensors, n_bytes, backend, fallback_reason)
    plan.memory            weights mapped, KV cache, scratch (bytes)
    plan.to_dict()         the JSON of ``refllm plan MODEL --json``

Support levels:
    optimized    the Numba backend (or the CUDA one, asked for with ``--backend cuda``)
                 serves every op and every weight type (the Numba backend's SiLU/GELU
                 are NumPy's own vectorised functions, its fastest; the plan says "numpy")
    generic      the NumPy reference runs it (asked for with ``--backend numpy`` or
                 ``--no-specialization``, or because some op fell back; the
                 fallback reasons say which and why)
    unsupported  the file resolves, but no backend can run it; ``reason`` says why
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from refllm.errors import InvalidRequest, RefllmError
from refllm.kernels.reference import BACKEND_NAMES as BACKENDS  # numpy, numba, cuda
DEFAULT_BACKEND = "numba"


def configured_backend(device: str | None = None) -> str:
    """The backend a model runs on when none is asked for: ``runtime.device`` (refllm.toml,
    REFLLM_DEVICE) "cuda" -> the cuda backend, "cpu" -> numba."""
    if device is None:
        from refllm.config import load_settings

        device = load_settings().runtime.device
    return "cuda" if device == "cuda" else DEFAULT_BACKEND
# Prompt tokens evaluated in one prefill step, for the scratch estimate.
PREFILL_BATCH = 512


@dataclass
class OpPlan:
    backend: str  # "numba", "numpy" or "cuda"
    fallback_reason: str | None = None


@dataclass
class QuantPlan:
    n_tensors: int
    n_bytes: int
    backend: str
    fallback_reason: str | None = None


@dataclass
class MemoryPlan:
    """On the cuda backend the weights are also copied to GPU memory (once, as raw GGML
    blocks), and the KV cache and the scratch live there, not in host memory."""

    weights_mapped_bytes: int  # the GGUF tensor data, memory-mapped (shared; read in at load when it fits, GGUFFile.read_in)
    kv_cache_bytes: int  # float32 keys + values for num_ctx positions (committed as they fill)
    scratch_bytes: int  # activations of a prefill batch, dequantized tiles, logits
    total_bytes: int


@dataclass
class RuntimePlan:
    model: str
    path: str
    architecture: str
    support_level: str
    reason: str | None  # why "unsupported"
    backend: str  # the backend that will run it
    requested_backend: str | None
    specialization: str | None  # "numba-cpu" when optimized kernels are planned
    no_specialization: bool
    threads: int
    num_ctx: int
    n_ctx_train: int | None
    ops: dict[str, OpPlan] = field(default_factory=dict)
    quant_types: dict[str, QuantPlan] = field(default_factory=dict)
    memory: MemoryPlan | None = None
    fallbacks: list[str] = field(default_factory=list)
    cuda: dict[str, Any] = field(default_factory=dict)  # {"available": bool, "reason": str}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _open(model_or_gguf):
    """A Model, a GGUFFile, or a path / store name -> (GGUFFile, display name)."""
    from refllm.gguf import GGUFFile, read

    if isinstance(model_or_gguf, GGUFFile):
        return model_or_gguf, model_or_gguf.path.stem
    if hasattr(model_or_gguf, "gguf") and isinstance(model_or_gguf.gguf, GGUFFile):
        return model_or_gguf.gguf, getattr(model_or_gguf, "name", model_or_gguf.gguf.path.stem)
    from refllm.model.loaded import resolve_model_path

    path = resolve_model_path(model_or_gguf)
    return read(path), str(model_or_gguf)


def cuda_type_names() -> set[str]:
    """Weight types the CUDA kernels read (imported only when the cuda backend is planned)."""
    from gguf import GGMLQuantizationType

    from refllm.kernels.cuda.kernels import SUPPORTED_TYPES

    return {GGMLQuantizationType(t).name for t in SUPPORTED_TYPES}


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads() -> int:
    """Threads the Numba kernels use: ``runtime.num_threads`` (refllm.toml) when set, else all
    cores (NUMBA_NUM_THREADS), never more than Numba has."""
    try:
        from numba import config

        available = int(config.NUMBA_NUM_THREADS)
    except ImportError:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    from refllm.config import load_settings

    asked = load_settings().runtime.num_threads
    return min(asked, available) if asked > 0 else available


def apply_thread_setting() -> int:
    """Make the Numba kernels use ``default_threads()``; returns the count (called where models load)."""
    threads = default_threads()
    if numba_available():
        from refllm.kernels import numba_backend

        numba_backend.set_threads(threads)
    return threads


def _activation_op(architecture: str) -> str:
    return "gelu_tanh" if architecture.startswith("gemma") else "silu"


def build_plan(
    model_or_gguf,
    backend: str | None = None,
    no_specialization: bool = False,
    num_ctx: int | None = None,
    threads: int | None = None,
) -> RuntimePlan:
    """Resolve how ``model_or_gguf`` would run, without running it (see the module docstring)."""
    from refllm import quant
    from refllm.kernels.cuda import cuda_status
    from refllm.kernels.quantized import KERNELS

    if backend is not None and backend not in BACKENDS:
        raise InvalidRequest(f"unknown backend '{backend}' (choose one of: {', '.join(BACKENDS)})")
    if num_ctx is not None and int(num_ctx) <= 0:
        raise InvalidRequest(f"num_ctx must be a positive number of tokens, got {num_ctx}")
    gguf_file, name = _open(model_or_gguf)

    # Which backend: asked for, else numba unless specialization is off or Numba is missing.
    fallbacks: list[str] = []
    if backend is not None:
        chosen = backend
    elif no_specialization:
        chosen = "numpy"
    else:
        chosen = configured_backend()
    if chosen == "numba" and not numba_available():
        chosen = "numpy"
        fallbacks.append("numba is not installed: every op runs on the NumPy reference")
    cuda_available, cuda_reason = cuda_status()

    plan = RuntimePlan(
        model=name,
        path=str(gguf_file.path),
        architecture=gguf_file.architecture,
        support_level="generic",
        reason=None,
        backend=chosen,
        requested_backend=backend,
        specialization=None,
        no_specialization=no_specialization,
        threads=int(threads or (default_threads() if chosen == "numba" else 1)),
        num_ctx=0,
        n_ctx_train=None,
        cuda={"available": cuda_available, "reason": cuda_reason},
    )
    if chosen == "cuda" and not cuda_available:
        plan.support_level, plan.reason = "unsupported", f"backend 'cuda' is not available here: {cuda_reason}"
        plan.num_ctx = int(num_ctx or 0)
        return plan

    # Can the forward pass run this file at all?  (Reads metadata and the tensor table only.)
    try:
        from refllm.model.transformer import Transformer

        transformer = Transformer(gguf_file)
    except RefllmError as error:
        plan.support_level, plan.reason = "unsupported", str(error)
        plan.num_ctx = int(num_ctx or 0)
        return plan
    cfg = transformer.config
    plan.n_ctx_train = cfg.n_ctx_train
    from refllm.sample.options import DEFAULT_NUM_CTX

    # Ollama's rule, as refllm.generate applies it: num_ctx (default 4096), at most the training context.
    plan.num_ctx = min(int(num_ctx or DEFAULT_NUM_CTX), cfg.n_ctx_train)

    # Weights, grouped by GGML type.
    by_type: dict[str, list] = {}
    for info in gguf_file.tensors.values():
        by_type.setdefault(info.ggml_type.name, []).append(info)
    for type_name, infos in sorted(by_type.items()):
        n_bytes = sum(i.n_bytes for i in infos)
        if type_name not in {t.name for t in quant.SUPPORTED_DEQUANT_TYPES}:
            plan.quant_types[type_name] = QuantPlan(len(infos), n_bytes, "none", f"no dequantizer for {type_name}")
            plan.support_level = "unsupported"
            plan.reason = f"tensor type {type_name} cannot be dequantized (e.g. {infos[0].name})"
        elif chosen == "numba" and type_name not in KERNELS:
            reason = f"no Numba kernel for {type_name}: its matmuls run on the NumPy reference"
            plan.quant_types[type_name] = QuantPlan(len(infos), n_bytes, "numpy", reason)
            fallbacks.append(reason)
        elif chosen == "cuda" and type_name not in cuda_type_names():
            reason = f"no CUDA kernel for {type_name}: its matmuls and embedding rows run on the NumPy reference, through host memory"
            plan.quant_types[type_name] = QuantPlan(len(infos), n_bytes, "numpy", reason)
            fallbacks.append(reason)
        else:
            plan.quant_types[type_name] = QuantPlan(len(infos), n_bytes, chosen)
    if plan.support_level == "unsupported":
        return plan

    # Ops of the forward pass.
    op_names = ["embedding_rows", "rms_norm", "rope", "attention", _activation_op(cfg.architecture), "linear", "softmax"]
    for op in op_names:
        plan.ops[op] = OpPlan(chosen)
    if chosen == "numba":  # by choice, not a fallback: NumPy's vectorised exp/tanh are the fast path
        plan.ops[_activation_op(cfg.architecture)] = OpPlan("numpy")
    if chosen in ("numba", "cuda") and any(q.backend == "numpy" for q in plan.quant_types.values()):
        plan.ops["linear"] = OpPlan(f"{chosen}+numpy", f"some weight types have no {chosen} kernel (see quant_types)")

    plan.fallbacks = fallbacks
    if chosen == "numba" and not fallbacks:
        plan.support_level, plan.specialization = "optimized", "numba-cpu"
    if chosen == "cuda" and not fallbacks:
        plan.support_level, plan.specialization = "optimized", "numba-cuda"
    plan.memory = _memory(gguf_file, cfg, plan.num_ctx, chosen, plan.threads)
    return plan


def _memory(gguf_file, cfg, num_ctx: int, backend: str, threads: int = 1) -> MemoryPlan:
    """Bytes: mapped weights, the float32 KV cache, and the scratch of one prefill batch."""
    weights = sum(info.n_bytes for info in gguf_file.tensors.values())
    kv_cache = 4 * cfg.n_layers * num_ctx * cfg.n_kv_heads * (cfg.head_dim + cfg.head_dim_v)
    batch = min(num_ctx, PREFILL_BATCH)
    q_width = cfg.n_heads * max(cfg.head_dim, cfg.head_dim_v)
    activations = 4 * batch * (3 * cfg.n_embd + 2 * cfg.n_ff + 2 * q_width)  # x, h, residual, gate, up, q, att
    logits = 4 * cfg.n_vocab
    if backend == "numba":
        from refllm.kernels.numba_backend import ATTENTION_CHUNK_TOKENS, TILE_WEIGHTS

        # each thread holds one weight tile, and the scores of one chunk of queries x one kv head's group
        group = cfg.n_heads // cfg.n_kv_heads
        attention_scores = 4 * threads * min(batch, ATTENTION_CHUNK_TOKENS) * group * num_ctx
        dequantized = 4 * TILE_WEIGHTS * threads
    else:
        from refllm.kernels.reference import WEIGHTS_PER_CHUNK

        attention_scores = 4 * batch * num_ctx * cfg.n_heads  # every head's scores at once
        if backend == "cuda":
            dequantized = 0  # the kernels decode the raw blocks in registers
        else:  # the reference dequantizes up to WEIGHTS_PER_CHUNK weights per step of a matmul
            largest = max((i.n_elements for i in gguf_file.tensors.values() if len(i.shape) == 2), default=0)
            dequantized = 4 * min(largest, WEIGHTS_PER_CHUNK)
    scratch = activations + attention_scores + logits + dequantized
    return MemoryPlan(weights, kv_cache, scratch, weights + kv_cache + scratch)


def format_plan(plan: RuntimePlan) -> str:
    """A readable summary of a plan (``refllm plan MODEL`` without --json)."""
    mib = 1 << 20
    lines = [
        f"model          {plan.model}  ({plan.path})",
        f"architecture   {plan.architecture}",
        f"support level  {plan.support_level}" + (f": {plan.reason}" if plan.reason else ""),
    ]
    if plan.support_level == "unsupported":
        return "\n".join(lines)
    lines += [
        f"backend        {plan.backend}" + (f"  (specialization {plan.specialization})" if plan.specialization else ""),
        f"threads        {plan.threads}",
        f"cuda           {'available' if plan.cuda.get('available') else 'not available'}: {plan.cuda.get('reason', '')}",
        f"context        {plan.num_ctx} tokens (trained on {plan.n_ctx_train})",
        "ops            " + ", ".join(f"{op}={p.backend}" for op, p in plan.ops.items()),
        "weights        " + ", ".join(f"{t} x{q.n_tensors} ({q.n_bytes / mib:.1f} MiB, {q.backend})" for t, q in plan.quant_types.items()),
    ]
    if plan.memory:
        m = plan.memory
        lines.append(
            f"memory         {m.total_bytes / mib:.0f} MiB = weights {m.weights_mapped_bytes / mib:.0f} (mapped)"
            f" + KV cache {m.kv_cache_bytes / mib:.0f} + scratch {m.scratch_bytes / mib:.0f}"
        )
    for reason in plan.fallbacks:
        lines.append(f"fallback       {reason}")
    return "\n".join(lines)
