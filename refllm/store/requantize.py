"""``create --quantize``: rewrite a GGUF with its weights in another GGML type.

For each tensor:  raw bytes --refllm.quant.dequantize--> float32 --refllm.quant.quantize--> new bytes.
The metadata is copied key by key (with its exact GGUF value types, read by
gguf-py's reader), except ``general.file_type``, which names the new type.

Which type each tensor gets:

    1-D tensors (norms, biases)           F32, always (as llama.cpp does)
    q8_0, q4_0, q4_1, q5_0, q5_1, f16, bf16   every matrix in that type
    q4_k_m (llama.cpp's mix)              Q6_K  output.weight (token_embd.weight when the output is tied)
                                          Q6_K  attn_v / ffn_down in the layers use_more_bits() picks
                                          Q4_K  every other matrix

A matrix whose rows are not a whole number of blocks (Gemma 3 270M's 640-wide
rows and the 256-weight K blocks) falls back as llama.cpp's does: Q4_K -> Q5_0,
Q6_K -> Q8_0, and anything else to F16.
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFValueType

from refllm.store.blobs import Progress, no_progress

TARGETS: dict[str, tuple[T, gguf.LlamaFileType]] = {
    "q8_0": (T.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (T.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (T.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "q5_0": (T.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q5_1": (T.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
    "f16": (T.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (T.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q4_k_m": (T.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_M),
}
FALLBACK = {T.Q4_K: T.Q5_0, T.Q6_K: T.Q8_0}  # rows that don't fit 256-weight K blocks
WEIGHTS_PER_STEP = 1 << 22  # rows are converted in steps of ~4 M weights (16 MB of float32)
_LAYER = re.compile(r"^blk\.(\d+)\.")


def requantize_gguf(source: Path, out: Path, quantize: str, progress: Progress = no_progress) -> None:
    from refllm.gguf import read

    target, file_type = TARGETS[quantize]
    model = read(source)
    fields = gguf.GGUFReader(source).fields
    n_layers = _block_count(model)
    tied_output = "output.weight" not in model.tensors

    writer = gguf.GGUFWriter(out, model.architecture)
    alignment = model.metadata.get("general.alignment")
    if alignment is not None:
        writer.add_custom_alignment(int(alignment))
    _copy_metadata(fields, writer, file_type)

    # 1) the tensor table: every tensor's new type and byte size
    plan: list[tuple[str, T]] = []
    for name, tensor in model.tensors.items():
        new_type = choose_type(name, tensor.shape, target, n_layers, tied_output)
        plan.append((name, new_type))
        n_bytes = _nbytes(tensor.shape, new_type)
        writer.add_tensor_info(name, tuple(tensor.shape), np.dtype(np.float32), n_bytes, raw_dtype=new_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    # 2) the data, tensor by tensor, in the table's order
    status = f"quantizing to {quantize.upper()}"
    for index, (name, new_type) in enumerate(plan):
        progress({"status": status, "total": len(plan), "completed": index, "unit": "tensors"})
        writer.write_tensor_data(convert_tensor(model.tensors[name], new_type))
    progress({"status": status, "total": len(plan), "completed": len(plan), "unit": "tensors"})
    writer.close()


def choose_type(name: str, shape: tuple[int, ...], target: T, n_layers: int, tied_output: bool) -> T:
    """The type one tensor gets (see the module docstring)."""
    if len(shape) == 1:
        return T.F32
    chosen = target
    if target == T.Q4_K:  # the q4_k_m mix
        layer = _LAYER.match(name)
        if name == "output.weight" or (tied_output and name == "token_embd.weight"):
            chosen = T.Q6_K
        elif layer and (".attn_v." in name or ".ffn_down" in name) and use_more_bits(int(layer.group(1)), n_layers):
            chosen = T.Q6_K
    block_size = GGML_QUANT_SIZES[chosen][0]
    if shape[-1] % block_size != 0:
        chosen = FALLBACK.get(chosen, T.F16)
        if shape[-1] % GGML_QUANT_SIZES[chosen][0] != 0:
            chosen = T.F16
    return chosen


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's rule for q4_k_m: the first and last eighth of the layers, and every third between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def convert_tensor(tensor, new_type: T) -> np.ndarray:
    """One tensor's raw bytes -> float32 -> ``new_type`` bytes ([n_rows, row_bytes] uint8, or float32)."""
    from refllm.quant import dequantize, quantize

    row_length = tensor.shape[-1]
    n_rows = int(np.prod(tensor.shape[:-1], dtype=np.int64))
    source_row_bytes = tensor.n_bytes // n_rows
    raw_rows = tensor.raw.reshape(n_rows, source_row_bytes)  # [n_rows, bytes per source row]
    if new_type == T.F32:
        return dequantize(tensor.raw, tensor.ggml_type, tensor.shape).astype(np.float32).reshape(tensor.shape)
    out = np.empty((n_rows, _nbytes((row_length,), new_type)), dtype=np.uint8)  # [n_rows, bytes per new row]
    step = max(1, WEIGHTS_PER_STEP // row_length)
    for start in range(0, n_rows, step):
        rows = raw_rows[start:start + step]
        values = dequantize(rows.reshape(-1), tensor.ggml_type, (rows.shape[0], row_length))  # [k, row_length]
        out[start:start + rows.shape[0]] = quantize(values, new_type).reshape(rows.shape[0], -1)
    return out


def _nbytes(shape: tuple[int, ...], ggml_type: T) -> int:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block_size * type_size


def _block_count(model) -> int:
    value = model.metadata.get(f"{model.architecture}.block_count")
    if value is not None:
        return int(value)
    layers = {int(m.group(1)) for name in model.tensors if (m := _LAYER.match(name))}
    return max(layers, default=-1) + 1


def _copy_metadata(fields, writer: gguf.GGUFWriter, file_type: gguf.LlamaFileType) -> None:
    """Every key/value with its GGUF type; the file type is set to the new one."""
    for key, field in fields.items():  # (the writer has written general.architecture already)
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.alignment"):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        value = field.contents()
        if value_type == GGUFValueType.ARRAY and len(value) == 0:
            continue  # gguf-py's writer cannot write an empty array; no reader needs one
        writer.add_key_value(key, value, value_type, sub_type)
    writer.add_key_value("general.file_type", int(file_type), GGUFValueType.UINT32)
    if "general.quantization_version" not in fields:
        writer.add_key_value("general.quantization_version", gguf.GGML_QUANT_VERSION, GGUFValueType.UINT32)
