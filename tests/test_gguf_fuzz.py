"""Fuzzing the GGUF reader: damaged files raise GGUFError and nothing else, and never hang.

Inputs: a small synthetic file holding every metadata value type and a few tensors
(hypothesis: truncations, byte overwrites, inserted and deleted bytes), and the header
region of both real models (seeded random truncations and byte flips, aimed at the
structural bytes: the start of the file and the tensor table).  A byte flip inside
tensor data, or inside a vocabulary string, is legitimately undetectable; such files
must simply open.
"""

from __future__ import annotations

import random
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gguf_reader import EVERY_VALUE, gguf_bytes

import refllm.gguf as rg

SYNTHETIC_KVS = [("general.architecture", V.STRING, "llama"), ("general.alignment", V.UINT32, 64), *EVERY_VALUE]
SYNTHETIC_DATA = (bytes(range(256)) * 3)[:546]  # the data section ends where tensor "c" does
SYNTHETIC = gguf_bytes(
    SYNTHETIC_KVS,
    [("a", [32, 2], T.F32, 0), ("b", [256], T.Q4_K, 256), ("c", [32], T.Q8_0, 512)],
    SYNTHETIC_DATA,
    alignment=64,
)
# The bytes that hold structure rather than text or weights: the fixed header and the tensor
# table (names, dims, type ids, offsets).  Half of the overwrites aim there.
TABLE_START = len(gguf_bytes(SYNTHETIC_KVS, alignment=1))
STRUCTURE = list(range(0, 24)) + list(range(TABLE_START, len(SYNTHETIC) - len(SYNTHETIC_DATA)))
FUZZ_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@contextmanager
def hang_guard(seconds: int = 10):
    """Turn a hang into a test failure (a guard, not a speed assertion)."""

    def on_alarm(signum, frame):
        raise AssertionError(f"reading took more than {seconds} s: the reader hangs")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_or_gguf_error(path: Path) -> rg.GGUFFile | None:
    """Open ``path``; a GGUFError is fine, any other exception fails the test. Touch every value."""
    with hang_guard():
        try:
            f = rg.read(path)
        except rg.GGUFError as e:
            assert str(path) in str(e) and " at byte " in str(e)
            return None
        for value in f.metadata.values():  # lazily decoded parts must not raise either
            if isinstance(value, rg.StringArray):
                for i in range(0, len(value), max(1, len(value) // 1000)):
                    value[i]
        for t in f.tensors.values():
            assert t.raw.nbytes == t.n_bytes and t.offset + t.n_bytes <= f.file_size
        return f


def test_the_synthetic_file_is_valid(tmp_path):
    path = tmp_path / "s.gguf"
    path.write_bytes(SYNTHETIC)
    f = read_or_gguf_error(path)
    assert f is not None and set(f.tensors) == {"a", "b", "c"} and f.alignment == 64


@FUZZ_SETTINGS
@given(cut=st.integers(0, len(SYNTHETIC) - 1))
def test_truncated_synthetic_file(tmp_path, cut):
    path = tmp_path / "t.gguf"
    path.write_bytes(SYNTHETIC[:cut])
    assert read_or_gguf_error(path) is None  # a cut anywhere loses a field or tensor bytes


@FUZZ_SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.one_of(st.integers(0, len(SYNTHETIC) - 1), st.sampled_from(STRUCTURE)), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_overwritten_bytes_in_synthetic_file(tmp_path, edits):
    data = bytearray(SYNTHETIC)
    for position, value in edits:
        data[position] = value
    path = tmp_path / "o.gguf"
    path.write_bytes(bytes(data))
    read_or_gguf_error(path)


@FUZZ_SETTINGS
@given(position=st.integers(0, len(SYNTHETIC)), inserted=st.binary(max_size=16), deleted=st.integers(0, 16))
def test_inserted_and_deleted_bytes_in_synthetic_file(tmp_path, position, inserted, deleted):
    path = tmp_path / "i.gguf"
    path.write_bytes(SYNTHETIC[:position] + inserted + SYNTHETIC[position + deleted :])
    read_or_gguf_error(path)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_after_a_valid_magic(tmp_path, data):
    path = tmp_path / "r.gguf"
    path.write_bytes(b"GGUF" + data)
    read_or_gguf_error(path)


# --------------------------------------------------------------------------- real headers


@pytest.fixture(scope="module", params=["smollm2_gguf", "gemma3_gguf"])
def real_header(request, tmp_path_factory) -> tuple[bytes, int, int]:
    """(the bytes before the data section plus 4 KiB of data, data offset, start of the tensor table)."""
    path = request.getfixturevalue(request.param)
    f = rg.read(path)
    table_bytes = sum(8 + len(name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for name, t in f.tensors.items())
    with open(path, "rb") as fh:
        head = fh.read(f.data_offset + 4096)
    return head, f.data_offset, f.data_offset - table_bytes


def test_truncated_real_headers(tmp_path, real_header):
    head, data_offset, table_start = real_header
    rng = random.Random(1)
    cuts = [0, 3, 4, 8, 23, 24, table_start - 1, table_start + 100, data_offset - 1]
    cuts += [rng.randrange(0, data_offset) for _ in range(12)]
    for cut in cuts:
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(head[:cut])
        assert read_or_gguf_error(path) is None, cut
    path = tmp_path / "header_only.gguf"  # the whole header, but the tensors' bytes are missing
    path.write_bytes(head)
    assert read_or_gguf_error(path) is None


def test_flipped_bytes_in_real_headers(tmp_path, real_header):
    head, data_offset, table_start = real_header
    rng = np.random.default_rng(2)
    regions = [(0, 4096), (table_start, data_offset), (0, data_offset)]  # structure first, then anywhere
    for trial in range(24):
        lo, hi = regions[trial % 3]
        data = bytearray(head)
        for position in rng.integers(lo, hi, size=rng.integers(1, 4)):
            data[position] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / f"flip{trial}.gguf"
        path.write_bytes(bytes(data))
        read_or_gguf_error(path)
