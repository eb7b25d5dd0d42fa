"""GGUF files: ``refllm.gguf.read(path) -> GGUFFile`` (see ``reader.py`` for the format)."""

from .reader import (
    GGUFError,
    GGUFFile,
    InvalidMetadata,
    InvalidTensorInfo,
    NotAGGUFFile,
    StringArray,
    TensorInfo,
    TruncatedGGUF,
    UnknownGGMLType,
    UnsupportedGGUFVersion,
    read,
    tensor_nbytes,
)

__all__ = [
    "GGUFError",
    "GGUFFile",
    "InvalidMetadata",
    "InvalidTensorInfo",
    "NotAGGUFFile",
    "StringArray",
    "TensorInfo",
    "TruncatedGGUF",
    "UnknownGGMLType",
    "UnsupportedGGUFVersion",
    "read",
    "tensor_nbytes",
]
