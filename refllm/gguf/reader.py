"""A readable GGUF reader over ``mmap``.

GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) is one file:

    +--------------------------------------------------------------+
    | magic "GGUF" | version u32 | n_tensors u64 | n_kv u64        |  header
    +--------------------------------------------------------------+
    | n_kv x (key: string, value_type: u32, value)                 |  metadata
    +--------------------------------------------------------------+
    | n_tensors x (name: string, n_dims: u32, dims: u64[n_dims],   |  tensor table
    |              ggml_type: u32, offset: u64)                    |
    +--------------------------------------------------------------+
    | padding to general.alignment (default 32)                    |
    +--------------------------------------------------------------+
    | tensor data; each tensor at data_start + offset              |  data section
    +--------------------------------------------------------------+

    string = length u64 + UTF-8 bytes (no terminator)
    array  = element_type u32 + count u64 + elements

All integers are little-endian.  ``dims`` are in ggml order (fastest-varying
first); we report NumPy order (reversed), so a weight of ggml shape
``[n_embd, n_vocab]`` is ``(n_vocab, n_embd)`` here: one row per output.

Nothing is copied: tensor data are NumPy views into the mapping, and large
string arrays (the vocabulary) are decoded lazily, element by element.
Every malformed input raises a subclass of :class:`GGUFError` naming the file,
the field and the byte offset.  Every length and count is checked against the
bytes that remain before anything is allocated, so what a hostile file claims
never drives allocation: memory stays within a small multiple of the bytes that
are really there (NumPy arrays and string offsets take at most the file's own
size; only the Python objects of many tiny keys or nested arrays take more).
"""

from __future__ import annotations

import array
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32


# --------------------------------------------------------------------------- errors


class GGUFError(Exception):
    """Base class of every error raised while reading a GGUF file."""

    def __init__(self, path: str | os.PathLike, field: str, offset: int, message: str):
        self.path, self.field, self.offset = str(path), field, offset
        super().__init__(f"{self.path}: {field} at byte {offset}: {message}")


class NotAGGUFFile(GGUFError):
    """Wrong magic bytes."""


class UnsupportedGGUFVersion(GGUFError):
    """A GGUF version other than 2 or 3."""


class TruncatedGGUF(GGUFError):
    """A length, count or value runs past the end of the file."""


class InvalidMetadata(GGUFError):
    """A metadata value of an unknown type, or a string that is not UTF-8."""


class InvalidTensorInfo(GGUFError):
    """A tensor entry with bad dims, offset, overlap or alignment."""


class UnknownGGMLType(GGUFError):
    """A tensor type id that ggml does not define (or has removed)."""


# --------------------------------------------------------------------------- metadata value types

# GGUF value type id -> (name, NumPy dtype for scalars and arrays). 8 = string, 9 = array.
SCALAR_TYPES: dict[int, np.dtype] = {
    0: np.dtype("<u1"),  # UINT8
    1: np.dtype("<i1"),  # INT8
    2: np.dtype("<u2"),  # UINT16
    3: np.dtype("<i2"),  # INT16
    4: np.dtype("<u4"),  # UINT32
    5: np.dtype("<i4"),  # INT32
    6: np.dtype("<f4"),  # FLOAT32
    7: np.dtype("<u1"),  # BOOL (one byte, 0 or 1)
    10: np.dtype("<u8"),  # UINT64
    11: np.dtype("<i8"),  # INT64
    12: np.dtype("<f8"),  # FLOAT64
}
TYPE_BOOL, TYPE_STRING, TYPE_ARRAY = 7, 8, 9
MAX_ARRAY_NESTING = 8


class StringArray(Sequence[str]):
    """A GGUF array of strings, decoded on access (the vocabulary has 262k of them).

    ``offsets[i]`` is where string ``i``'s UTF-8 bytes start in the file; its length is
    the u64 just before them.  Keeping only the offsets costs 8 bytes per string, no more
    than the file spends on each string's length.  Invalid UTF-8 decodes with U+FFFD.
    """

    _read_u64 = struct.Struct("<Q").unpack_from

    def __init__(self, buf: np.ndarray, offsets: np.ndarray):
        self._buf, self._view, self.offsets = buf, memoryview(buf), offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start = int(self.offsets[i])
        (length,) = self._read_u64(self._view, start - 8)
        return str(self._view[start : start + length], "utf-8", "replace")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        """Byte length of every string, read in one vectorised gather."""
        length_bytes = self._buf[self.offsets[:, None] - 8 + np.arange(8)]  # [n, 8] little-endian u64s
        return length_bytes.view("<u8")[:, 0].astype(np.int64)

    def tolist(self) -> list[str]:
        """Every string, decoded in one pass over a copy of their bytes (~0.1 s for 262k)."""
        if len(self) == 0:
            return []
        starts = self.offsets.astype(np.int64)  # [n]
        ends = starts + self.lengths  # [n]
        first, last = int(starts.min()), int(ends.max())
        blob = bytes(self._view[first:last])  # one copy; slicing bytes is much cheaper than a memoryview
        return [blob[a:b].decode("utf-8", "replace") for a, b in zip((starts - first).tolist(), (ends - first).tolist())]

    def __repr__(self) -> str:
        return f"StringArray(len={len(self)})"


# --------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table, plus a zero-copy view of its bytes."""

    name: str
    shape: tuple[int, ...]  # NumPy order: shape[-1] is the contiguous (ggml ne0) axis
    ggml_type: GGMLQuantizationType
    offset: int  # absolute byte offset in the file
    n_bytes: int
    raw: np.ndarray  # uint8 view of the tensor's bytes inside the mmap

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def tensor_nbytes(shape: Sequence[int], ggml_type: GGMLQuantizationType) -> int:
    """Bytes taken by a tensor: rows of ``shape[-1]`` elements packed in blocks."""
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_elements = 1
    for d in shape:
        n_elements *= int(d)
    return n_elements // block_size * type_size


# --------------------------------------------------------------------------- the file


@dataclass
class GGUFFile:
    """An opened GGUF file. Keep it alive while any tensor view is in use."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    alignment: int
    data_offset: int
    file_size: int
    _mmap: mmap.mmap | None = None

    @property
    def n_parameters(self) -> int:
        """Number of weights: every tensor's element count, summed (``ollama show``'s "parameters")."""
        return sum(t.n_elements for t in self.tensors.values())

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def read_in(self) -> None:
        """Bring every page of the file into this process's memory now, in one sequential pass.

        The tensors are views into the memory map, and the OS maps a page into the process
        only when it is first read (a page fault).  Left to the first forward pass, those
        faults land scattered across the weights, one small range at a time: measured on
        Gemma 3 270M (241 MB, already in the page cache), the first 128-token prefill took
        360-390 ms against 205-220 ms for the next ones, while this pass takes ~25 ms.
        llama.cpp does the same when it loads a model (``MAP_POPULATE``).
        """
        if self._mmap is None:
            return
        if hasattr(mmap, "MADV_WILLNEED"):  # start reading from disk ahead of the pass, if not cached
            self._mmap.madvise(mmap.MADV_WILLNEED)
        data = np.frombuffer(self._mmap, dtype=np.uint8)
        int(data[:: mmap.PAGESIZE].sum())  # reading one byte of each page maps it

    def close(self) -> None:
        """Drop the tensor views and the mapping (views must not be used afterwards)."""
        self.tensors = {}
        self._mmap = None  # the mapping closes when the last view is garbage-collected

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cursor:
    """Reads little-endian values from a uint8 buffer, checking bounds first."""

    def __init__(self, buf: np.ndarray, path: Path):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def need(self, n: int, field: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise TruncatedGGUF(self.path, field, self.pos, f"needs {n} bytes but only {self.size - self.pos} remain")

    def scalar(self, dtype: np.dtype, field: str) -> Any:
        self.need(dtype.itemsize, field)
        value = self.buf[self.pos : self.pos + dtype.itemsize].view(dtype)[0]
        self.pos += dtype.itemsize
        return value.item()

    def u32(self, field: str) -> int:
        return self.scalar(SCALAR_TYPES[4], field)

    def u64(self, field: str) -> int:
        return self.scalar(SCALAR_TYPES[10], field)

    def string(self, field: str) -> str:
        start = self.pos
        n = self.u64(field + " length")
        self.need(n, field)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidMetadata(self.path, field, start, f"string is not valid UTF-8 ({e.reason})") from None

    def count(self, field: str, min_item_bytes: int) -> int:
        """A u64 element count, refused if that many items could not fit in the rest of the file."""
        at = self.pos
        n = self.u64(field)
        if n * min_item_bytes > self.size - self.pos:
            raise TruncatedGGUF(self.path, field, at, f"count {n} cannot fit in the {self.size - self.pos} bytes left")
        return n

    # -- metadata values

    def value(self, value_type: int, field: str, depth: int = 0) -> Any:
        if value_type in SCALAR_TYPES:
            v = self.scalar(SCALAR_TYPES[value_type], field)
            return bool(v) if value_type == TYPE_BOOL else v
        if value_type == TYPE_STRING:
            return self.string(field)
        if value_type == TYPE_ARRAY:
            return self.array(field, depth)
        raise InvalidMetadata(self.path, field, self.pos - 4, f"unknown value type {value_type}")

    def array(self, field: str, depth: int) -> Any:
        if depth >= MAX_ARRAY_NESTING:
            raise InvalidMetadata(self.path, field, self.pos, f"arrays nested deeper than {MAX_ARRAY_NESTING}")
        elem_type = self.u32(field + " element type")
        if elem_type in SCALAR_TYPES:  # numbers: one zero-copy NumPy view
            dtype = SCALAR_TYPES[elem_type]
            n = self.count(field + " count", dtype.itemsize)
            values = self.buf[self.pos : self.pos + n * dtype.itemsize].view(dtype)
            self.pos += n * dtype.itemsize
            return values.astype(bool) if elem_type == TYPE_BOOL else values
        if elem_type == TYPE_STRING:  # strings: record where each one is, decode later
            n = self.count(field + " count", 8)
            return self.string_array(n, field)
        if elem_type == TYPE_ARRAY:  # nested arrays: a Python list of arrays
            n = self.count(field + " count", 12)
            return [self.array(f"{field}[{i}]", depth + 1) for i in range(n)]
        raise InvalidMetadata(self.path, field, self.pos - 4, f"unknown array element type {elem_type}")

    def string_array(self, n: int, field: str) -> StringArray:
        """Find where each of ``n`` strings starts; decode none of them (the vocabulary has 262k).

        Each string's position depends on the previous one's length, so this is one
        sequential pass; ``struct.unpack_from`` on a memoryview is the fastest plain-Python way.
        """
        read_u64 = struct.Struct("<Q").unpack_from
        view, pos, size = memoryview(self.buf), self.pos, self.size
        offsets = array.array("q", [0]) * n  # 8 bytes per string, like the lengths in the file
        for i in range(n):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"{field}[{i}] length")
            (length,) = read_u64(view, pos)
            pos += 8
            if length > size - pos:
                self.pos = pos
                self.need(length, f"{field}[{i}]")
            offsets[i] = pos
            pos += length
        self.pos = pos
        return StringArray(self.buf, np.frombuffer(offsets, dtype=np.int64))


# Type ids ggml once had and dropped (old 4-bit formats, then the CPU-repacked layouts that
# llama.cpp now builds at load time instead of storing).  Files that use them must be re-converted.
REMOVED_GGML_TYPES = {4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
                      36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"}  # fmt: skip


def _ggml_type(type_id: int, path: Path, field: str, offset: int) -> GGMLQuantizationType:
    if type_id in REMOVED_GGML_TYPES:
        name = REMOVED_GGML_TYPES[type_id]
        message = f"ggml type {type_id} ({name}) was removed from ggml; re-convert the model"
        raise UnknownGGMLType(path, field, offset, message)
    try:
        ggml_type = GGMLQuantizationType(type_id)
    except ValueError:
        raise UnknownGGMLType(path, field, offset, f"unknown ggml type id {type_id}") from None
    if ggml_type not in GGML_QUANT_SIZES:
        raise UnknownGGMLType(path, field, offset, f"ggml type {ggml_type.name} has no known block size")
    return ggml_type


def read(path: str | os.PathLike) -> GGUFFile:
    """Open a GGUF file: parse header, metadata and tensor table; map the data."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a directory, a pipe, a device: never open it
            raise GGUFError(path, "file", 0, "not a regular file")
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size == 0:
                raise TruncatedGGUF(path, "magic", 0, "file is empty")
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise GGUFError(path, "file", 0, e.strerror or str(e)) from None
    buf = np.frombuffer(mapping, dtype=np.uint8)
    cur = _Cursor(buf, path)

    # 1. header
    cur.need(4, "magic")
    magic = bytes(buf[:4])
    if magic != GGUF_MAGIC:
        raise NotAGGUFFile(path, "magic", 0, f"expected b'GGUF', found {magic!r}")
    cur.pos = 4
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedGGUFVersion(path, "version", 4, f"version {version} is not supported (only 2 and 3)")
    n_tensors = cur.count("tensor count", 24)  # a tensor entry is at least 24 bytes
    n_kv = cur.count("metadata count", 13)  # a key/value pair is at least 13 bytes

    # 2. metadata: key -> value
    metadata: dict[str, Any] = {}
    key_offsets: dict[str, int] = {}  # where each key starts, for error messages
    for i in range(n_kv):
        key_at = cur.pos
        key = cur.string(f"metadata[{i}] key")
        if key in metadata:
            raise InvalidMetadata(path, f"metadata {key!r}", key_at, "duplicate key")
        value_type = cur.u32(f"metadata {key!r} type")
        metadata[key] = cur.value(value_type, f"metadata {key!r}")
        key_offsets[key] = key_at

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        at = key_offsets.get("general.alignment", 0)
        raise InvalidMetadata(path, "general.alignment", at, f"alignment must be a power of two, got {alignment!r}")

    # 3. tensor table (offsets are relative to the data section, known only afterwards)
    entries = []
    for i in range(n_tensors):
        entry_at = cur.pos
        name = cur.string(f"tensor[{i}] name")
        n_dims = cur.u32(f"tensor {name!r} n_dims")
        if not 1 <= n_dims <= 4:
            raise InvalidTensorInfo(path, f"tensor {name!r} n_dims", entry_at, f"{n_dims} dims (ggml allows 1 to 4)")
        dims = [cur.u64(f"tensor {name!r} dim {d}") for d in range(n_dims)]
        type_at = cur.pos
        ggml_type = _ggml_type(cur.u32(f"tensor {name!r} type"), path, f"tensor {name!r} type", type_at)
        rel_offset = cur.u64(f"tensor {name!r} offset")
        entries.append((name, dims, ggml_type, rel_offset, entry_at))

    data_offset = (cur.pos + alignment - 1) // alignment * alignment

    # 4. validate every tensor against the data section, then make the views
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, dims, ggml_type, rel_offset, entry_at in entries:
        field = f"tensor {name!r}"
        if name in tensors:
            raise InvalidTensorInfo(path, field, entry_at, "duplicate tensor name")
        n_elements = 1
        for d in dims:
            n_elements *= d
            if d == 0 or n_elements > file_size * 64:  # no format packs more than 64 elements per byte
                message = f"dims {dims} are empty or too large for the file"
                raise InvalidTensorInfo(path, field + " dims", entry_at, message)
        block_size, _ = GGML_QUANT_SIZES[ggml_type]
        if dims[0] % block_size:
            message = f"row length {dims[0]} is not a multiple of the {ggml_type.name} block size {block_size}"
            raise InvalidTensorInfo(path, field + " dims", entry_at, message)
        shape = tuple(reversed(dims))
        n_bytes = tensor_nbytes(shape, ggml_type)
        if rel_offset % alignment:
            raise InvalidTensorInfo(path, field + " offset", entry_at, f"offset {rel_offset} is not aligned to {alignment}")
        start = data_offset + rel_offset
        if start + n_bytes > file_size:
            message = f"data [{start}, {start + n_bytes}) lies outside the file ({file_size} bytes)"
            raise InvalidTensorInfo(path, field + " offset", entry_at, message)
        spans.append((start, start + n_bytes, name))
        tensors[name] = TensorInfo(name, shape, ggml_type, start, n_bytes, buf[start : start + n_bytes])

    spans.sort()
    for (s0, e0, n0), (s1, _, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise InvalidTensorInfo(path, f"tensor {n1!r} offset", s1, f"overlaps tensor {n0!r} [{s0}, {e0})")

    return GGUFFile(path, version, metadata, tensors, alignment, data_offset, file_size, mapping)
