"""Shared benchmark helpers: a throughput table printed after the pytest-benchmark one.

A benchmark calls ``record_throughput(label, bytes_in, bytes_out)`` after its
``benchmark(...)`` call; the fastest round gives GB/s (1 GB = 1e9 bytes).
"""

from __future__ import annotations

import pytest

_ROWS: list[tuple[str, int, int, float]] = []


@pytest.fixture
def record_throughput(benchmark):
    def record(label: str, bytes_in: int, bytes_out: int) -> None:
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:  # not under --benchmark-disable
            _ROWS.append((label, bytes_in, bytes_out, stats.stats.min))

    return record


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    write = terminalreporter.write_line
    write("")
    write("throughput (fastest round; GB = 1e9 bytes)")
    write(f"{'case':12} {'in MB':>7} {'out MB':>7} {'ms':>8} {'in GB/s':>8} {'out GB/s':>9}")
    for label, bytes_in, bytes_out, seconds in _ROWS:
        write(
            f"{label:12} {bytes_in / 1e6:7.2f} {bytes_out / 1e6:7.2f} {seconds * 1e3:8.2f} "
            f"{bytes_in / seconds / 1e9:8.2f} {bytes_out / seconds / 1e9:9.2f}"
        )
