"""Where compiled kernels are cached: NUMBA_CACHE_DIR honoured, read-only installs still cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from refllm.kernels.cache import choose_cache_dir

REPO = Path(__file__).resolve().parent.parent


def test_numba_cache_dir_from_the_user_wins(tmp_path):
    directory, why = choose_cache_dir({"NUMBA_CACHE_DIR": str(tmp_path)}, tmp_path, writable=lambda p: False)
    assert directory is None and str(tmp_path) in why  # Numba reads the variable itself


def test_writable_package_keeps_numbas_default(tmp_path):
    directory, why = choose_cache_dir({}, tmp_path, writable=lambda p: True)
    assert directory is None and "__pycache__" in why


def test_read_only_package_caches_under_the_user_cache(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    directory, why = choose_cache_dir(env, Path("/usr/lib/python3/refllm/kernels"), writable=lambda p: False)
    assert directory == str(tmp_path / "xdg" / "refllm" / "numba") and "read-only" in why


def _run_kernel(env: dict) -> subprocess.CompletedProcess:
    """A fresh process calls one cached kernel; stdout: its result, then Numba's cache hits and misses."""
    code = (
        "import time\n"
        "import numpy as np\n"
        "from refllm.kernels import numba_backend as nb, numba_ops\n"
        "nb.NOTICE_AFTER_S = 0.0  # any compile at all prints the notice\n"
        "print(nb.rms_norm(np.array([[0.0, 1.0]], np.float32), np.ones(2, np.float32), 0.0)[0, 1])\n"
        "time.sleep(0.2)  # let a notice timer fire, if one was armed\n"
        "stats = numba_ops.rms_norm_rows.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_numba_cache_dir_is_honoured_and_reused(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    first = _run_kernel(env)
    assert first.returncode == 0, first.stderr
    value, counts = first.stdout.splitlines()
    assert abs(float(value) - 2**0.5) < 1e-6  # 1 / sqrt(mean(0, 1))
    assert counts == "0 1"  # empty cache: compiled once
    assert "compiling kernels" in first.stderr
    cached = list(tmp_path.rglob("*.nbi"))
    assert cached, "no Numba index file written under NUMBA_CACHE_DIR"

    second = _run_kernel(env)  # a fresh process: loads from the cache written above
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [value, "1 0"]  # one cache hit, nothing recompiled
    assert "compiling kernels" not in second.stderr  # the notice is for compiling, not for loading


def test_numba_start_up_skips_scipy_but_leaves_it_usable():
    code = (
        "import sys\n"
        "import numba, numpy as np\n"
        "from refllm.kernels import numba_backend as nb\n"
        "nb.rms_norm(np.ones((1, 2), np.float32), np.ones(2, np.float32), 1e-6)\n"
        "print('scipy.linalg' in sys.modules)\n"
        "@numba.njit\n"
        "def dot(a, b):\n"
        "    return np.dot(a, b)\n"
        "try:\n"
        "    print(dot(np.ones((2, 2)), np.ones((2, 2)))[0, 0])\n"
        "except Exception as e:  # without SciPy, Numba's np.dot has no BLAS: nothing we changed\n"
        "    print('no scipy' if 'scipy' in str(e) else repr(e))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded, dot = done.stdout.splitlines()
    assert loaded == "False"  # the kernels never pulled SciPy in
    assert dot in ("2.0", "no scipy")  # and Numba code that wants BLAS still gets it
