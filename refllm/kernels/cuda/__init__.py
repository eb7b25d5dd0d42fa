"""The ``cuda`` backend: numba.cuda kernels reading raw GGML blocks on an NVIDIA GPU.

``cuda_status()`` says whether the backend can run here and, if not, why — without
importing numba.cuda's driver bindings eagerly or printing warnings.  The kernels
also run in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which is how CI
tests them on machines without a GPU.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache


@lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(available, reason). available is True on a real GPU or under the simulator."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but very slow"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from numba import cuda

            if not cuda.is_available():
                return False, "no CUDA driver or GPU found (numba.cuda.is_available() is False)"
            name = cuda.get_current_device().name
            if isinstance(name, bytes):
                name = name.decode()
            return True, f"CUDA device: {name}"
    except Exception as e:  # a broken driver install must not break the CPU runtime
        return False, f"numba.cuda could not initialise: {type(e).__name__}: {e}"
