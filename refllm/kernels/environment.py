"""What the kernels will run on: ``refllm doctor``'s report.

CPU and cores, the SIMD features LLVM sees (what Numba can vectorise with),
Numba / llvmlite / NumPy versions, Numba's threading layer and thread count,
the kernel cache directory, NumPy's BLAS (the NumPy reference backend's matmuls) and whether a
CUDA GPU is usable.  Every probe is guarded: a missing piece is reported, never raised.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from refllm.kernels.cache import configure_cache_dir

# The host features worth showing (LLVM reports ~100 flags).
SIMD_FLAGS = (
    "sse2", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
    "avx512vnni", "avx512bf16", "avxvnni", "neon", "sve", "dotprod", "i8mm",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _llvm_cpu() -> dict[str, Any]:
    try:
        import llvmlite
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features()
        return {
            "llvmlite_version": llvmlite.__version__,
            "llvm_cpu_name": llvm.get_host_cpu_name(),
            "simd": [flag for flag in SIMD_FLAGS if features.get(flag)],
        }
    except Exception as error:  # noqa: BLE001 - a diagnostic must not fail
        return {"llvmlite_version": None, "llvm_cpu_name": None, "simd": [], "llvm_error": str(error)}


def _numba() -> dict[str, Any]:
    try:
        import numba
    except ImportError as error:
        return {"numba_version": None, "numba_error": str(error)}
    info: dict[str, Any] = {
        "numba_version": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer_requested": numba.config.THREADING_LAYER,
    }
    try:  # the layer in use is known only after a parallel kernel has run
        import numpy as np

        from refllm.kernels import numba_backend

        numba_backend._run(_parallel_probe(), np.zeros(4))
        info["threading_layer"] = numba.threading_layer()
        info["kernel_threads"] = numba_backend.set_threads(None)  # refllm's own threads: numba_backend.run_tasks
    except Exception as error:  # noqa: BLE001
        info["threading_layer"] = None
        info["threading_error"] = str(error)
    return info


def _parallel_probe():
    """A one-line parallel kernel (refllm's kernels no longer use Numba's threads, but
    other Numba code in the process does): running it tells which layer Numba picks."""
    from numba import njit, prange

    @njit(parallel=True)
    def add_one(x):
        for i in prange(x.shape[0]):
            x[i] += 1.0

    return add_one


def _blas() -> str | None:
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # noqa: BLE001
        return None


def _cuda() -> dict[str, Any]:
    """numba.cuda availability, without its warnings on a machine with no GPU."""
    import io
    import warnings
    from contextlib import redirect_stderr

    try:
        with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            from numba import cuda

            available = bool(cuda.is_available())
            devices = [d.name.decode() if isinstance(d.name, bytes) else str(d.name) for d in cuda.list_devices()] if available else []
        return {"cuda_available": available, "cuda_devices": devices}
    except Exception as error:  # noqa: BLE001
        return {"cuda_available": False, "cuda_devices": [], "cuda_error": str(error).splitlines()[0] if str(error) else type(error).__name__}


def environment_report() -> dict[str, Any]:
    import numpy as np

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": affinity,
        **_llvm_cpu(),
        "numpy_version": np.__version__,
        "blas": _blas(),
        **_numba(),
        "kernel_cache": configure_cache_dir(),
        **_cuda(),
    }
    return report


def format_environment(report: dict[str, Any]) -> str:
    lines = [
        f"CPU            {report['cpu']} ({report.get('llvm_cpu_name')}), {report['usable_cores']} usable of {report['cpu_count']} cores",
        f"SIMD (LLVM)    {' '.join(report['simd']) or 'none detected'}",
        f"Python         {report['python']} on {report['platform']}",
        f"NumPy          {report['numpy_version']}, BLAS {report['blas']}",
    ]
    if report.get("numba_version"):
        lines.append(
            f"Numba          {report['numba_version']} (llvmlite {report['llvmlite_version']}), "
            f"{report['numba_threads']} threads, threading layer {report.get('threading_layer')}"
        )
    else:
        lines.append(f"Numba          not available ({report.get('numba_error')}): the NumPy reference backend will run")
    lines.append(f"Kernel cache   {report['kernel_cache']}")
    if report["cuda_available"]:
        lines.append(f"CUDA           available: {', '.join(report['cuda_devices'])}")
    else:
        lines.append("CUDA           not available" + (f" ({report['cuda_error']})" if report.get("cuda_error") else ""))
    return "\n".join(lines)
