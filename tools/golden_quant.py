"""Write golden (de)quantization data from llama.cpp's own C reference functions.

    python tools/golden_quant.py

Needs the ``reference`` extra: the ``xllamacpp`` wheel ships llama.cpp's ggml
as one shared library that exports ggml's plain C functions

    void dequantize_row_<type>(const void * blocks, float * out, int64_t n_weights)
    void quantize_row_<type>_ref(const float * x, void * blocks, int64_t n_weights)

which we call through ``ctypes``.  refllm's runtime never imports this; the
tests (tests/test_quant.py) only read the file written here:

    golden/quant/llamacpp.npz
        dequant_<TYPE>_blocks   uint8[n_blocks, type_size]   random blocks (f16 / e8m0
                                                             scale fields made finite)
        dequant_<TYPE>_values   float32[n_blocks * block_size]  llama.cpp's dequantization
        quant_input             float32[n_sets, 4096]        inputs: Gaussian, uniform,
                                                             sparse, llama.cpp's test pattern
        quant_<TYPE>            uint8[n_sets, n_bytes]       llama.cpp's reference quantization
        quant_big_<TYPE>_<kind> uint8[n_chunks, 32]          SHA-256 of each 64-block chunk of
                                                             llama.cpp's quantization of
                                                             reproducible_values(BIG_LENGTH, kind)
                                                             (inputs rebuilt bit-exactly by the
                                                             test, so only hashes are stored)
        llama_cpp_version       the xllamacpp version string
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T  # noqa: E402

from refllm.quant.testing import random_blocks, reproducible_values  # noqa: E402

OUT = REPO / "golden" / "quant" / "llamacpp.npz"
BLOCKS_PER_TYPE = 8
QUANT_LENGTH = 4096  # 16 super-blocks, 128 legacy blocks per input set
BIG_LENGTH = 256 * 1024  # 1024 super-blocks per kind: rare tie-breaks show up
BIG_KINDS = ("normal", "uniform", "sparse", "outliers")
CHUNK_BLOCKS = 64

DEQUANT_TYPES = [
    T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
    T.IQ4_NL, T.IQ4_XS, T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS,
    T.IQ3_S, T.TQ1_0, T.TQ2_0, T.MXFP4, T.NVFP4, T.Q1_0,
]  # fmt: skip
QUANT_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
               T.TQ1_0, T.TQ2_0, T.MXFP4, T.IQ4_NL, T.IQ4_XS, T.NVFP4, T.Q1_0]  # fmt: skip


def ggml_library() -> ctypes.CDLL:
    import xllamacpp

    so = next(Path(xllamacpp.__file__).parent.glob("xllamacpp*.so"))
    return ctypes.CDLL(str(so))


def c_name(ggml_type: T) -> str:
    """GGML type -> the suffix of its C functions (q4_K, iq2_xxs, mxfp4, ...)."""
    return ggml_type.name.lower().replace("_k", "_K")


def quant_inputs(rng: np.random.Generator) -> np.ndarray:
    n = QUANT_LENGTH
    sparse = rng.standard_normal(n).astype(np.float32)
    sparse[rng.random(n) < 0.7] = 0
    pattern = (0.1 + 2 * np.cos(np.arange(n, dtype=np.float32))).astype(np.float32)
    return np.stack(
        [
            rng.standard_normal(n).astype(np.float32),
            rng.uniform(-1, 3, n).astype(np.float32),
            sparse,
            pattern,
        ]
    )


def chunk_hashes(raw: np.ndarray, type_size: int) -> np.ndarray:
    """SHA-256 of each run of CHUNK_BLOCKS blocks: [n_chunks, 32] uint8."""
    chunks = raw.reshape(-1, CHUNK_BLOCKS * type_size)
    return np.stack([np.frombuffer(hashlib.sha256(c.tobytes()).digest(), np.uint8) for c in chunks])


def llamacpp_quantize(lib: ctypes.CDLL, x: np.ndarray, ggml_type: T) -> np.ndarray:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    x = np.ascontiguousarray(x, dtype=np.float32)
    raw = np.zeros(x.size // block_size * type_size, dtype=np.uint8)
    getattr(lib, f"quantize_row_{c_name(ggml_type)}_ref")(
        x.ctypes.data_as(ctypes.c_void_p), raw.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size)
    )
    return raw


def main() -> int:
    lib = ggml_library()
    rng = np.random.default_rng(20261121)
    out: dict[str, np.ndarray] = {}
    for t in DEQUANT_TYPES:
        block_size, type_size = GGML_QUANT_SIZES[t]
        blocks = random_blocks(t, BLOCKS_PER_TYPE, rng)
        values = np.zeros(BLOCKS_PER_TYPE * block_size, dtype=np.float32)
        getattr(lib, f"dequantize_row_{c_name(t)}")(
            blocks.ctypes.data_as(ctypes.c_void_p), values.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int64(values.size),
        )  # fmt: skip
        out[f"dequant_{t.name}_blocks"] = blocks
        out[f"dequant_{t.name}_values"] = values

    inputs = quant_inputs(rng)
    out["quant_input"] = inputs
    for t in QUANT_TYPES:
        out[f"quant_{t.name}"] = np.stack([llamacpp_quantize(lib, x, t) for x in inputs])
        for kind in BIG_KINDS:
            raw = llamacpp_quantize(lib, reproducible_values(BIG_LENGTH, kind), t)
            out[f"quant_big_{t.name}_{kind}"] = chunk_hashes(raw, GGML_QUANT_SIZES[t][1])
    out["llama_cpp_version"] = np.array(f"xllamacpp {metadata.version('xllamacpp')}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
