"""Where Numba keeps compiled kernels between runs (``@njit(cache=True)``).

Compiling every kernel takes seconds; loading it from the cache takes
milliseconds.  Rules, in order:

1. ``NUMBA_CACHE_DIR`` set by the user: Numba uses it; we leave it alone.
2. The package directory is writable (a normal or editable install): Numba's
   default, ``__pycache__`` next to the source.
3. Otherwise (a read-only system install): ``$XDG_CACHE_HOME/refllm/numba``
   (``~/.cache/refllm/numba``), so the cache is never silently lost.

``configure_cache_dir()`` must run before Numba decorates the kernels (the
cache location is fixed at decoration time), so the kernel modules call it
before they import Numba.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Mapping

PACKAGE_DIR = Path(__file__).resolve().parent


def user_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "refllm" / "numba"


def _writable(path: Path) -> bool:
    pycache = path / "__pycache__"
    target = pycache if pycache.exists() else path
    return os.access(target, os.W_OK)


def choose_cache_dir(
    env: Mapping[str, str] = os.environ,
    package_dir: Path = PACKAGE_DIR,
    writable: Callable[[Path], bool] = _writable,
) -> tuple[str | None, str]:
    """(directory to set as NUMBA_CACHE_DIR or None for Numba's default, why)."""
    if env.get("NUMBA_CACHE_DIR"):
        return None, f"NUMBA_CACHE_DIR={env['NUMBA_CACHE_DIR']}"
    if writable(package_dir):
        return None, f"{package_dir / '__pycache__'} (next to the kernels)"
    directory = user_cache_dir(env)
    return str(directory), f"{directory} (package directory is read-only)"


def configure_cache_dir() -> str:
    """Apply the rules above; returns a one-line description of the cache location."""
    directory, why = choose_cache_dir()
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = directory
        if "numba" in sys.modules:  # already imported: its config has read the environment
            sys.modules["numba"].config.CACHE_DIR = directory
    return why
