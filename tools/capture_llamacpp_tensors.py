"""Capture llama.cpp's intermediate tensors for one prompt, and check refllm's ops against them.

    python tools/capture_llamacpp_tensors.py                 # both real models -> golden/llamacpp_ops/
    python tools/capture_llamacpp_tensors.py smollm2 --prompt 2 --layers 0 15
    python tools/capture_llamacpp_tensors.py --check-only    # print the table from the stored files
    python tools/make_golden.py ops ...                      # the same, through the dispatcher

llama.cpp evaluates the prompt (one batch, empty cache, 1 thread, no flash attention:
the settings of tools/golden_logits.py) with an eval callback (``cb_eval``) that copies
every float32 tensor of its graph as it is computed.  The tensors a few layers need
(``refllm.conformance.llamacpp_rounding.needed_tensors``) go to
``golden/llamacpp_ops/<model>.npz``, with a manifest beside them.  Then, for each of
those layers, every op is fed llama.cpp's own inputs and compared with llama.cpp's
output, twice: with llama.cpp's rounding (``refllm.conformance.llamacpp_rounding``) and
with refllm's float32 reference.  tests/test_llamacpp_rounding.py runs the same check.

Needs the ``reference`` extra (llama-cpp-python); refllm's runtime never imports it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from a checkout

OUT_DIR = REPO / "golden" / "llamacpp_ops"
DEFAULT_LAYERS = {"smollm2": [0, 15], "gemma3": [0, 5]}  # gemma3: layer 5 is a global-attention layer
GGML_TYPE_F32 = 0


class GGMLTensor(ctypes.Structure):
    """The head of ggml.h's ``struct ggml_tensor`` (GGML_MAX_DIMS 4, 64 bytes of op
    params, GGML_MAX_SRC 10, GGML_MAX_NAME 64), enough to read a tensor's data."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),  # elements per dim, ne[0] the contiguous one
        ("nb", ctypes.c_size_t * 4),  # strides in bytes
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
    ]


def capture(model_path: Path, ids: list[int]) -> dict[str, np.ndarray]:
    """Every float32 tensor llama.cpp computes for ``ids``, by graph name.  A name seen
    again (a reshape or RoPE keeps the name) gets ``#1``, ``#2``, ... in order."""
    import llama_cpp

    tensors: dict[str, np.ndarray] = {}

    def on_tensor(pointer, ask, _user_data):
        if ask:  # "do you want this one?"
            return True
        t = GGMLTensor.from_address(pointer)
        if t.type != GGML_TYPE_F32:
            return True
        ne, nb = list(t.ne), list(t.nb)
        span = sum((n - 1) * s for n, s in zip(ne, nb)) + 4
        flat = np.frombuffer((ctypes.c_char * span).from_address(t.data), dtype=np.float32)
        array = np.lib.stride_tricks.as_strided(flat, shape=ne[::-1], strides=nb[::-1]).copy()
        name, k = t.name.decode(), 1
        key = name
        while key in tensors:
            key, k = f"{name}#{k}", k + 1
        tensors[key] = array
        return True

    callback = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)(on_tensor)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 256
    params.n_threads = params.n_threads_batch = 1
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.cb_eval = callback
    ctx = llama_cpp.llama_init_from_model(model, params)
    tokens = (llama_cpp.llama_token * len(ids))(*ids)
    if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, len(ids))) != 0:
        raise SystemExit("llama_decode failed")
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return tensors


def print_checks(name: str, model, tensors: dict, layers: list[int]) -> None:
    from refllm.conformance.llamacpp_rounding import check_layer, check_output_head

    print(f"\n{name}: relative error vs llama.cpp (max |diff| / max |llama.cpp|), fed llama.cpp's inputs")
    print(f"  {'layer':>5}  {'op':28} {'with its rounding':>18} {'float32':>10}")
    for layer in layers:
        for c in check_layer(model, tensors, layer):
            print(f"  {layer:>5}  {c.op:28} {c.rounding_error:>18.1e} {c.float32_error:>10.1e}")
    c = check_output_head(model, tensors)
    print(f"  {'head':>5}  {c.op:28} {c.rounding_error:>18.1e} {c.float32_error:>10.1e}")


def main(argv: list[str] | None = None) -> int:
    import refllm
    from refllm.conformance.llamacpp_rounding import needed_tensors
    from refllm.packaged_models import gemma3_path, smollm2_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="smollm2 and/or gemma3 (default: both)")
    parser.add_argument("--prompt", type=int, default=2, help="index of the golden/logits prompt to evaluate")
    parser.add_argument("--layers", type=int, nargs="+", help="layers to store (default: per model)")
    parser.add_argument("--check-only", action="store_true", help="only print the check from the stored files")
    args = parser.parse_args(argv)

    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest_path = OUT_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.models or ["smollm2", "gemma3"]:
        if name not in paths:
            parser.error(f"unknown model {name!r} (choose smollm2 or gemma3)")
        path = paths[name]()
        model = refllm.load(path)
        out = OUT_DIR / f"{name}.npz"
        if args.check_only:
            stored = dict(np.load(out))
            print_checks(name, model, stored, manifest[name]["layers"])
            continue
        import llama_cpp

        layers = args.layers or DEFAULT_LAYERS[name]
        ids = [int(i) for i in np.load(REPO / "golden" / "logits" / f"{name}.llamacpp.npz")[f"p{args.prompt}_ids"]]
        tensors = capture(path, ids)
        keep = {k: tensors[k] for k in needed_tensors(model.config, layers)}
        np.savez_compressed(out, **keep)
        manifest[name] = {
            "model": path.name,
            "prompt_ids": ids,
            "layers": layers,
            "tensors": sorted(keep),
            "engine": f"llama-cpp-python {llama_cpp.__version__}, CPU, 1 thread, one batch, flash attention off, F16 KV cache",
            "command": "python tools/capture_llamacpp_tensors.py " + " ".join(sys.argv[1:]),
        }
        print(f"{name}: {len(tensors)} tensors captured, {len(keep)} kept -> {out.relative_to(REPO)} ({out.stat().st_size / 1024:.0f} KiB)")
        print_checks(name, model, keep, layers)
    if not args.check_only:
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
