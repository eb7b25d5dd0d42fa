"""The GGUF reader against independent references: gguf-py's writer and reader, and hand-built bytes.

* valid files: written by ``gguf.GGUFWriter`` (or by hand, for v2 and odd layouts), read back
  by ``refllm.gguf.read`` and compared with what was written and with ``gguf.GGUFReader``;
* the two real models: every metadata key and the whole tensor table equal gguf-py's;
* bad files: each malformation raises its own GGUFError subclass naming file, field and offset,
  without allocating what the file claims (tracemalloc).  The fuzzing is in test_gguf_fuzz.py.
"""

from __future__ import annotations

import mmap
import os
import struct
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

import refllm.gguf as rg

# --------------------------------------------------------------------------- hand-built GGUF bytes
# A small, explicit GGUF writer so tests can produce files no well-behaved writer would.


def gguf_string(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(data)) + data


SCALAR_FORMATS = {V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i",
                  V.FLOAT32: "f", V.BOOL: "?", V.UINT64: "Q", V.INT64: "q", V.FLOAT64: "d"}  # fmt: skip


def gguf_value(vtype: V, value) -> bytes:
    """The bytes of one value (without its type id)."""
    if vtype == V.STRING:
        return gguf_string(value)
    if vtype == V.ARRAY:
        elem_type, items = value
        body = b"".join(gguf_value(elem_type, item) for item in items)
        return struct.pack("<IQ", elem_type, len(items)) + body
    return struct.pack("<" + SCALAR_FORMATS[vtype], value)


def gguf_bytes(
    kvs: list[tuple[str, V, object]] = (),
    tensors: list[tuple[str, list[int], int, int]] = (),  # (name, ggml dims ne0 first, type id, relative offset)
    data: bytes = b"",
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value)
    for name, dims, type_id, offset in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", type_id, offset)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def two_tensor_file(version: int = 3) -> bytes:
    """'a': F32 [2, 4] at 0 (32 bytes), 'b': Q8_0 [32] at 32 (34 bytes); one metadata key."""
    a = np.arange(8, dtype=np.float32).tobytes()
    b = np.float16(0.5).tobytes() + bytes(range(32))
    return gguf_bytes(
        [("general.architecture", V.STRING, "llama")],
        [("a", [4, 2], T.F32, 0), ("b", [32], T.Q8_0, 32)],
        a + b + b"\0" * 30,
        version=version,
    )


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- gguf-py as the reference


def gguf_py_tables(path: Path, reader: gguf.GGUFReader | None = None) -> tuple[dict, dict]:
    """(metadata, tensor table) as gguf-py's GGUFReader sees them, in refllm's conventions."""
    reader = reader or gguf.GGUFReader(path)
    metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {
        t.name: (tuple(int(d) for d in reversed(t.shape.tolist())), t.tensor_type, int(t.data_offset), int(t.n_bytes))
        for t in reader.tensors
    }
    return metadata, tensors


def as_plain(value):
    """refllm metadata value -> plain Python (lists for NumPy and string arrays)."""
    if isinstance(value, (np.ndarray, rg.StringArray)):
        return list(value.tolist())
    if isinstance(value, list):
        return [as_plain(v) for v in value]
    return value


def assert_same_as_gguf_py(path: Path, reader: gguf.GGUFReader | None = None) -> rg.GGUFFile:
    ours = rg.read(path)
    their_meta, their_tensors = gguf_py_tables(path, reader)
    assert set(ours.metadata) == set(their_meta)
    for key, theirs in their_meta.items():
        assert as_plain(ours.metadata[key]) == theirs, key
    assert {n: (t.shape, t.ggml_type, t.offset, t.n_bytes) for n, t in ours.tensors.items()} == their_tensors
    return ours


# --------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("version", [2, 3])
def test_reads_version_2_and_3(tmp_path, version):
    f = rg.read(write(tmp_path, two_tensor_file(version)))
    assert f.version == version
    assert f.architecture == "llama"
    a, b = f.tensors["a"], f.tensors["b"]
    assert a.shape == (2, 4) and a.ggml_type == T.F32 and a.n_bytes == 32
    np.testing.assert_array_equal(a.raw.view(np.float32).reshape(a.shape), np.arange(8).reshape(2, 4))
    assert b.shape == (32,) and b.ggml_type == T.Q8_0 and b.n_bytes == 34
    assert bytes(b.raw[2:]) == bytes(range(32))
    assert f.data_offset % 32 == 0 and a.offset == f.data_offset and b.offset == f.data_offset + 32


def test_gguf_writer_v3_file_matches_gguf_py(tmp_path):
    path = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(path, "qwen3")
    w.add_uint32("qwen3.block_count", 2)
    w.add_token_list(["a", "bc", "", "ü€😀"])
    w.add_tensor("x", np.ones((3, 32), np.float32))
    w.add_tensor("y", gguf.quants.quantize(np.ones((2, 64), np.float32), T.Q4_0), raw_dtype=T.Q4_0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    f = assert_same_as_gguf_py(path)
    assert f.tensors["y"].shape == (2, 64) and f.tensors["y"].ggml_type == T.Q4_0
    assert list(f.metadata["tokenizer.ggml.tokens"]) == ["a", "bc", "", "ü€😀"]


# Every value type, with values at the edges of their ranges.
EVERY_VALUE = [
    ("t.u8", V.UINT8, 255), ("t.i8", V.INT8, -128), ("t.u16", V.UINT16, 65535), ("t.i16", V.INT16, -32768),
    ("t.u32", V.UINT32, 2**32 - 1), ("t.i32", V.INT32, -(2**31)), ("t.f32", V.FLOAT32, 0.5),
    ("t.bool", V.BOOL, True), ("t.false", V.BOOL, False), ("t.str", V.STRING, "héllo\nwörld"), ("t.empty", V.STRING, ""),
    ("t.u64", V.UINT64, 2**64 - 1), ("t.i64", V.INT64, -(2**63)), ("t.f64", V.FLOAT64, -1e300),
    ("t.arr_u8", V.ARRAY, (V.UINT8, [0, 1, 255])), ("t.arr_i32", V.ARRAY, (V.INT32, [-1, 0, 7])),
    ("t.arr_f32", V.ARRAY, (V.FLOAT32, [1.5, -2.0])), ("t.arr_bool", V.ARRAY, (V.BOOL, [True, False, True])),
    ("t.arr_u64", V.ARRAY, (V.UINT64, [2**64 - 1])), ("t.arr_f64", V.ARRAY, (V.FLOAT64, [0.1])),
    ("t.arr_str", V.ARRAY, (V.STRING, ["x", "", "日本"])), ("t.arr_empty", V.ARRAY, (V.INT16, [])),
    ("t.nested", V.ARRAY, (V.ARRAY, [(V.INT32, [1, 2]), (V.STRING, ["a"]), (V.ARRAY, [(V.UINT8, [9])])])),
]  # fmt: skip


def plain_expected(vtype, value):
    if vtype != V.ARRAY:
        return value
    elem_type, items = value
    return [plain_expected(elem_type, item) for item in items]


def test_every_metadata_value_type(tmp_path):
    f = rg.read(write(tmp_path, gguf_bytes(EVERY_VALUE)))
    assert list(f.metadata) == [key for key, _, _ in EVERY_VALUE]
    for key, vtype, value in EVERY_VALUE:
        assert as_plain(f.metadata[key]) == plain_expected(vtype, value), key
        if vtype in (V.UINT8, V.INT32, V.UINT64, V.BOOL):
            assert type(f.metadata[key]) is (bool if vtype == V.BOOL else int)
    assert f.metadata["t.arr_i32"].dtype == np.int32
    assert f.metadata["t.arr_bool"].dtype == bool
    assert isinstance(f.metadata["t.arr_str"], rg.StringArray)
    assert f.metadata["t.arr_str"].lengths.tolist() == [1, 0, 6]  # UTF-8 bytes of "x", "", "日本"
    assert f.metadata["t.arr_str"][-1] == "日本" and f.metadata["t.arr_str"][1:] == ["", "日本"]


def test_every_flat_value_type_matches_gguf_py(tmp_path):
    flat = [kv for kv in EVERY_VALUE if kv[0] != "t.nested"]  # gguf-py's contents() flattens nested arrays
    path = write(tmp_path, gguf_bytes(flat))
    assert_same_as_gguf_py(path)


def test_non_default_alignment(tmp_path):
    path = tmp_path / "aligned.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(256)
    for i, n in enumerate([3, 70, 5]):
        w.add_tensor(f"t{i}", np.arange(n, dtype=np.float32) + i)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    f = assert_same_as_gguf_py(path)
    assert f.alignment == 256 and f.metadata["general.alignment"] == 256
    assert f.data_offset % 256 == 0
    for i, n in enumerate([3, 70, 5]):
        t = f.tensors[f"t{i}"]
        assert (t.offset - f.data_offset) % 256 == 0
        np.testing.assert_array_equal(t.raw.view(np.float32), np.arange(n) + i)


def test_shapes_are_numpy_order(tmp_path):
    path = tmp_path / "shapes.gguf"
    w = gguf.GGUFWriter(path, "llama")
    values = np.arange(2 * 3 * 4 * 32, dtype=np.float32).reshape(2, 3, 4, 32)
    w.add_tensor("four_d", values)
    w.add_tensor("q", gguf.quants.quantize(values.reshape(24, 32), T.Q8_0), raw_dtype=T.Q8_0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    f = rg.read(path)
    t = f.tensors["four_d"]
    assert t.shape == (2, 3, 4, 32) and t.n_elements == values.size
    np.testing.assert_array_equal(t.raw.view(np.float32).reshape(t.shape), values)
    assert f.tensors["q"].shape == (24, 32) and f.tensors["q"].n_bytes == 24 * 34
    assert gguf.GGUFReader(path).tensors[0].shape.tolist() == [32, 4, 3, 2]  # ggml order on disk


def test_tensor_data_is_a_zero_copy_view_of_the_mapping(tmp_path):
    f = rg.read(write(tmp_path, two_tensor_file()))
    for t in f.tensors.values():
        owner = t.raw
        while isinstance(owner, np.ndarray):
            assert not owner.flags.owndata
            owner = owner.base
        if isinstance(owner, memoryview):  # np.frombuffer keeps a memoryview of the mapping
            owner = owner.obj
        assert isinstance(owner, mmap.mmap)
        assert not t.raw.flags.writeable


def test_opening_does_not_read_or_copy_tensor_data(tmp_path):
    """A 256 MiB tensor in a sparse file: opening allocates kilobytes, not the tensor."""
    n = 2**26  # float32 elements: 256 MiB
    path = write(tmp_path, gguf_bytes([("general.architecture", V.STRING, "llama")], [("big", [n], T.F32, 0)]))
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size + 4 * n)  # a hole: no disk, no page is touched
    tracemalloc.start()
    try:
        f = rg.read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.tensors["big"].n_bytes == 4 * n
    assert peak < 1_000_000


def _resident_bytes_of_mapping(path: Path) -> int:
    """Bytes of the file at ``path`` that this process has mapped in (Linux's /proc/self/smaps)."""
    resident, in_mapping = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line: range perms offset dev inode [path]
                in_mapping = len(fields) >= 6 and fields[5] == str(path)
            elif in_mapping and fields[0] == "Rss:":
                resident += int(fields[1]) * 1024
    return resident


def test_read_in_maps_every_page_of_the_file(tmp_path):
    """Opening maps in only the pages it parses; ``read_in`` maps in all of the tensor data.
    (Residency is read from /proc/self/smaps: Linux, where CI runs, as in test_startup_memory.)"""
    n = 2**23  # float32 elements: 32 MiB of tensor data
    data = np.arange(n, dtype=np.float32).tobytes()
    path = write(tmp_path, gguf_bytes([("general.architecture", V.STRING, "llama")], [("big", [n], T.F32, 0)], data))
    f = rg.read(path)
    before = _resident_bytes_of_mapping(path)
    f.read_in()
    after = _resident_bytes_of_mapping(path)
    assert before < len(data) // 4  # the OS maps in some neighbours of each page it parses, not all of them
    assert after >= len(data)
    np.testing.assert_array_equal(f.tensors["big"].raw[-8:].view(np.float32), [n - 2, n - 1])  # still a read-only view
    f.close()
    f.read_in()  # a closed file has nothing to read in, and says nothing


# --------------------------------------------------------------------------- the real models


@pytest.mark.parametrize("model", ["smollm2_gguf", "gemma3_gguf"])
def test_real_model_equals_gguf_py(request, model):
    path = request.getfixturevalue(model)
    reader = gguf.GGUFReader(path)  # slow (it parses the vocabulary in Python): once per model
    f = assert_same_as_gguf_py(path, reader)
    assert f.version == 3 and f.alignment == 32
    assert f.architecture == {"smollm2_gguf": "llama", "gemma3_gguf": "gemma3"}[model]
    for t in (reader.tensors[0], reader.tensors[-1]):  # the bytes too, for the first and last tensor
        assert f.tensors[t.name].raw.tobytes() == t.data.tobytes()


# --------------------------------------------------------------------------- bad files


def read_bad(path: Path, error: type[rg.GGUFError], field: str) -> rg.GGUFError:
    """Read ``path`` expecting ``error`` about ``field``; check the message and the memory used."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            rg.read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{path}: ") and " at byte " in message, message
    assert field in message, message
    assert info.value.field and info.value.offset >= 0
    assert peak < path.stat().st_size + 1_000_000, f"allocated {peak} bytes reading a {path.stat().st_size}-byte file"
    return info.value


def test_missing_file_directory_and_pipe(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)  # opening a pipe would block until someone writes: it must be refused first
    for path in (tmp_path / "nope.gguf", tmp_path, fifo):
        with pytest.raises(rg.GGUFError, match="file"):
            rg.read(path)


def test_empty_and_truncated_header(tmp_path):
    read_bad(write(tmp_path, b""), rg.TruncatedGGUF, "magic")
    read_bad(write(tmp_path, b"GGUF\x03\0"), rg.TruncatedGGUF, "version")
    read_bad(write(tmp_path, b"GGUF\x03\0\0\0" + b"\0" * 5), rg.TruncatedGGUF, "tensor count")
    one_key = gguf_bytes([("general.architecture", V.STRING, "llama")])
    read_bad(write(tmp_path, one_key[:50]), rg.TruncatedGGUF, "metadata[0] key")
    read_bad(write(tmp_path, one_key[:54]), rg.TruncatedGGUF, "metadata 'general.architecture' type")
    read_bad(write(tmp_path, one_key[:66]), rg.TruncatedGGUF, "metadata 'general.architecture'")


def test_wrong_magic(tmp_path):
    err = read_bad(write(tmp_path, b"GGML" + two_tensor_file()[4:]), rg.NotAGGUFFile, "magic")
    assert err.offset == 0


@pytest.mark.parametrize("version", [0, 1, 4, 2**32 - 1])
def test_unsupported_version(tmp_path, version):
    data = bytearray(two_tensor_file())
    data[4:8] = struct.pack("<I", version)
    err = read_bad(write(tmp_path, bytes(data)), rg.UnsupportedGGUFVersion, "version")
    assert err.offset == 4


def test_counts_past_end_of_file(tmp_path):
    data = bytearray(two_tensor_file())
    data[8:16] = struct.pack("<Q", 2**63)  # tensor count
    read_bad(write(tmp_path, bytes(data)), rg.TruncatedGGUF, "tensor count")
    data = bytearray(two_tensor_file())
    data[16:24] = struct.pack("<Q", 10**12)  # metadata count
    read_bad(write(tmp_path, bytes(data)), rg.TruncatedGGUF, "metadata count")
    data = bytearray(two_tensor_file())
    data[8:16] = struct.pack("<Q", 3)  # one more tensor than there are entries: its name runs into the data
    with pytest.raises(rg.GGUFError):
        rg.read(write(tmp_path, bytes(data)))


def test_string_length_past_end_of_file(tmp_path):
    data = bytearray(two_tensor_file())
    data[24:32] = struct.pack("<Q", 2**62)  # length of the first key
    err = read_bad(write(tmp_path, bytes(data)), rg.TruncatedGGUF, "metadata[0] key")
    assert err.offset == 32
    huge_value = gguf_bytes([("k", V.STRING, "abc")])
    at = huge_value.index(b"abc") - 8
    patched = huge_value[:at] + struct.pack("<Q", 2**40) + huge_value[at + 8 :]
    read_bad(write(tmp_path, patched), rg.TruncatedGGUF, "metadata 'k'")


@pytest.mark.parametrize("elem_type", [V.UINT8, V.FLOAT64, V.STRING, V.ARRAY])
def test_array_length_past_end_of_file(tmp_path, elem_type):
    data = gguf_bytes([("arr", V.ARRAY, (elem_type, []))])
    count_at = data.index(struct.pack("<IQ", elem_type, 0)) + 4
    data = data[:count_at] + struct.pack("<Q", 2**61) + data[count_at + 8 :]
    read_bad(write(tmp_path, data), rg.TruncatedGGUF, "metadata 'arr' count")


def test_string_in_array_past_end_of_file(tmp_path):
    data = gguf_bytes([("arr", V.ARRAY, (V.STRING, ["ab", "cd"]))])
    at = data.index(b"cd") - 8
    data = data[:at] + struct.pack("<Q", 2**50) + data[at + 8 :]
    read_bad(write(tmp_path, data), rg.TruncatedGGUF, "metadata 'arr'[1]")


def test_unknown_value_types_and_bad_utf8(tmp_path):
    bad_type = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<I", 13) + b"\0" * 8
    read_bad(write(tmp_path, bad_type), rg.InvalidMetadata, "metadata 'k'")
    bad_elem = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<IIQ", V.ARRAY, 99, 0)
    read_bad(write(tmp_path, bad_elem), rg.InvalidMetadata, "metadata 'k'")
    bad_key = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string(b"\xff\xfe") + struct.pack("<IB", V.UINT8, 1)
    read_bad(write(tmp_path, bad_key), rg.InvalidMetadata, "metadata[0] key")
    bad_value = gguf_bytes([("k", V.STRING, b"\xc3\x28")])
    read_bad(write(tmp_path, bad_value), rg.InvalidMetadata, "metadata 'k'")


def test_arrays_nested_too_deep(tmp_path):
    value = (V.INT8, [1])
    for _ in range(20):
        value = (V.ARRAY, [value])
    read_bad(write(tmp_path, gguf_bytes([("deep", V.ARRAY, value)])), rg.InvalidMetadata, "nested")


def test_duplicate_metadata_key(tmp_path):
    data = gguf_bytes([("k", V.UINT8, 1), ("k", V.UINT8, 2)])
    read_bad(write(tmp_path, data), rg.InvalidMetadata, "metadata 'k'")


@pytest.mark.parametrize("alignment", [0, 3, 48])
def test_bad_alignment(tmp_path, alignment):
    data = gguf_bytes([("general.alignment", V.UINT32, alignment)])
    read_bad(write(tmp_path, data), rg.InvalidMetadata, "general.alignment")


def one_tensor(tmp_path, dims, type_id=T.F32, offset=0, data=b"\0" * 64) -> Path:
    return write(tmp_path, gguf_bytes([], [("w", dims, type_id, offset)], data))


@pytest.mark.parametrize("type_id", [4, 5, 31, 32, 33, 36, 37, 38, 42, 2**31])
def test_unknown_or_removed_ggml_types(tmp_path, type_id):
    err = read_bad(one_tensor(tmp_path, [32], type_id), rg.UnknownGGMLType, "tensor 'w' type")
    with pytest.raises(ValueError):
        T(type_id)  # gguf-py agrees: no such type today
    if type_id in (31, 36):
        assert {31: "Q4_0_4_4", 36: "IQ4_NL_4_4"}[type_id] in str(err) and "removed" in str(err)


@pytest.mark.parametrize("dims", [[], [1, 1, 1, 1, 1], [0], [2**32, 2**32], [2**63, 2**63, 2**63, 2**63], [4, 2**62]])
def test_bad_or_overflowing_dims(tmp_path, dims):
    read_bad(one_tensor(tmp_path, dims), rg.InvalidTensorInfo, "tensor 'w'")


def test_row_not_a_whole_number_of_blocks(tmp_path):
    read_bad(one_tensor(tmp_path, [16, 2], T.Q4_0), rg.InvalidTensorInfo, "tensor 'w' dims")


def test_data_outside_the_file(tmp_path):
    read_bad(one_tensor(tmp_path, [32], T.F32, offset=0, data=b"\0" * 100), rg.InvalidTensorInfo, "tensor 'w' offset")
    read_bad(one_tensor(tmp_path, [8], T.F32, offset=2**63), rg.InvalidTensorInfo, "tensor 'w' offset")


def test_misaligned_offset(tmp_path):
    read_bad(one_tensor(tmp_path, [4], T.F32, offset=4), rg.InvalidTensorInfo, "tensor 'w' offset")


def test_overlapping_tensors(tmp_path):
    data = gguf_bytes([], [("a", [16], T.F32, 0), ("b", [16], T.F32, 32)], b"\0" * 128)
    read_bad(write(tmp_path, data), rg.InvalidTensorInfo, "tensor 'b' offset")


def test_duplicate_tensor_names(tmp_path):
    data = gguf_bytes([], [("a", [8], T.F32, 0), ("a", [8], T.F32, 32)], b"\0" * 64)
    read_bad(write(tmp_path, data), rg.InvalidTensorInfo, "tensor 'a'")


def test_every_error_is_a_gguf_error():
    for cls in (rg.NotAGGUFFile, rg.UnsupportedGGUFVersion, rg.TruncatedGGUF, rg.InvalidMetadata,
                rg.InvalidTensorInfo, rg.UnknownGGMLType):  # fmt: skip
        assert issubclass(cls, rg.GGUFError)
