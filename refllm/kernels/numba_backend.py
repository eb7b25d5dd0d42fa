"""The ``numba`` Backend: the forward pass's ops on the CPU through Numba kernels.

Same functions, shapes and dtypes as ``refllm/kernels/reference.py`` (the NumPy
reference); ``BACKEND`` bundles them.  What each op runs:

    linear, 1 token  (decode)   fused dequantize x matvec on the raw blocks (quantized.py),
                                rows over Numba's threads when that measures faster
    linear, n tokens (prefill)  dequantize a tile of weight rows once, then multiply
                                every token by it (``numba_ops.matmul_nt``, x @ tile.T);
                                the tiles are shared out to the tile threads (``run_tasks``),
                                those of q, k, v (gate, up) together (``linears``)
    embedding_rows              dequantize just the chosen rows
    rms_norm, rope, softmax     numba_ops.py, on the calling thread
    attention                   numba_ops.py (prefill: chunks of query tokens on the
                                tile threads, two matmul_nt products each)
    silu, gelu_tanh             NumPy's own (the reference functions): NumPy evaluates
                                float32 exp and tanh with AVX-512/AVX2 code, while a
                                Numba loop calls libm once per value (no SVML here):
                                128 x 2048 GELU 0.27 vs 1.44 ms, 128 x 1536 SiLU 0.17
                                vs 0.89 ms, and a decode row no slower

Threads: ``set_threads(n)`` (default NUMBA_NUM_THREADS, i.e. every core).

    decode   each matvec runs its rows on one thread or on all (Numba's ``prange``,
             OpenMP), whichever is measured faster (``_DecodeThreads``): with an
             idle second core SmolLM2 decodes ~1.45x faster on two threads (65-68
             vs 36-47 tok/s, interleaved runs), but OpenMP splits the rows statically,
             so while another process holds a core every matvec waits for it
             (measured: 2-3x slower than one thread, down to 2 tok/s).
    prefill  ``run_tasks`` shares big work out as tasks (a weight tile, a chunk of
             query tokens) that the caller and its helper threads take one at a time
             until none is left, running ``nogil`` kernels, so a thread slowed down by
             another process just takes fewer tasks.  A hand-off costs ~40-90 us: fine
             for prefill's tiles, too slow for decode's 20-150 us matvecs.

Prefill calls no BLAS: its matrix products are ``numba_ops.matmul_nt`` on the tile
threads.  (They were NumPy's, and OpenBLAS's own thread pool on the same cores fought
the tile threads -- 2-thread prefill measured slower than 1-thread -- until held at
one thread; OpenBLAS also ignores a thread count set from any thread but the main one.)

A weight whose GGML type has no Numba kernel falls back to the reference
``linear`` (``refllm.plan`` reports which, and why).

The first call of each kernel compiles it (or loads it from Numba's on-disk
cache, milliseconds); a compile that takes more than a moment prints one line on
stderr (``_CompileNotice``).
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
import numba.core.event
import numba.core.registry
import numpy as np

from refllm.gguf import TensorInfo
from refllm.kernels import numba_ops, reference
from refllm.kernels.cache import configure_cache_dir
from refllm.kernels.quantized import F16_TO_F32, KERNELS
from refllm.kernels.reference import Backend

configure_cache_dir()

# Prefill: about this many float32 weights per dequantized tile (512 KiB), so a
# thread's tile and the prompt's activations share its core's L2 cache (1 MiB per
# core here) while matmul_nt passes over them.  Measured, Gemma 3's layer shapes,
# 128 tokens, 2 threads: 256-512 KiB tiles 3-6% faster than 1 MiB, one thread alike
# (with BLAS before, 4 MiB tiles lost 10-30%).
TILE_WEIGHTS = 1 << 17
# Up to this many tokens, ``linear`` runs the matvec once per token (decode and
# tiny batches); above it, the dequantize-tile + matmul path.
MATVEC_MAX_TOKENS = 2
# From this many query tokens on, attention runs as two matmul_nt products, in chunks of
# ATTENTION_CHUNK_TOKENS query tokens (per key/value head) on the tile threads.
PARALLEL_ATTENTION_MIN_TOKENS = 8
ATTENTION_CHUNK_TOKENS = 32
# A decode matvec over fewer weights than this always runs on one thread (waking
# a second one costs more than it saves); from it on, _DecodeThreads chooses.
PARALLEL_MIN_WEIGHTS = 1 << 16


def supports(ggml_type) -> bool:
    """True if a Numba kernel serves weights of this GGML type."""
    return getattr(ggml_type, "name", str(ggml_type)) in KERNELS


# --------------------------------------------------------------------------- compile notice

_notice_lock = threading.Lock()
_notice_shown = False
NOTICE_AFTER_S = 1.0


def _show_notice() -> None:
    global _notice_shown
    with _notice_lock:
        if not _notice_shown:
            _notice_shown = True
            print("refllm: compiling kernels (first run only; cached afterwards)...", file=sys.stderr, flush=True)


class _CompileNotice(numba.core.event.Listener):
    """Print the notice once when Numba has been *compiling* for NOTICE_AFTER_S.

    Numba fires its "numba:compile" event only after a cache miss, so loading a kernel
    from the on-disk cache never shows the notice, however slow the machine is. (Timing
    the first call instead would also count Numba's one-time start-up, ~0.4-1 s in every
    process, and print the notice on every run.)  Only refllm's kernels arm the timer;
    nested compiles (a kernel's helpers) arm one.
    """

    def __init__(self):
        self._depth = 0
        self._timer: threading.Timer | None = None

    def on_start(self, event) -> None:
        self._depth += 1
        if self._depth == 1 and not _notice_shown and _is_ours(event.data["dispatcher"]):
            self._timer = threading.Timer(NOTICE_AFTER_S, _show_notice)
            self._timer.daemon = True
            self._timer.start()

    def on_end(self, event) -> None:
        self._depth -= 1
        if self._depth == 0 and self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _is_ours(dispatcher) -> bool:
    """A refllm kernel (other Numba code in the same process compiles without our notice)."""
    return (getattr(dispatcher.py_func, "__module__", None) or "").startswith("refllm.")  # None for exec'd code


numba.core.event.register("numba:compile", _CompileNotice())


# --------------------------------------------------------------------------- Numba start-up

_numba_started = False
_start_lock = threading.Lock()


def _start_numba() -> None:
    """Numba's one-time set-up (its typing and lowering registries), without SciPy's BLAS.

    The first kernel call of a process makes Numba load its registries; one of them
    (``numba.np.arraymath``) imports ``scipy.linalg`` just to see whether BLAS exists,
    for ``np.dot``-like code in jitted functions. No refllm kernel calls BLAS from Numba
    (prefill's products are ``matmul_nt``), yet that import costs ~0.45 s and ~30 MB in every
    process that has SciPy installed. Hiding ``scipy.linalg`` for the duration makes
    Numba take its "no BLAS" branch; afterwards SciPy imports normally, and Numba's
    ``np.dot`` still finds it when some jitted code needs it.
    """
    global _numba_started
    with _start_lock:  # a server's first requests may arrive together
        if _numba_started:
            return
        hide = "scipy.linalg" not in sys.modules
        if hide:
            sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # "import scipy.linalg" -> ImportError
        try:
            numba.core.registry.cpu_target.target_context.refresh()
        finally:
            if hide:
                del sys.modules["scipy.linalg"]
        _numba_started = True


def _run(kernel, *args):
    """Call a kernel (the first call per signature compiles it or loads it from Numba's cache)."""
    if not _numba_started:
        _start_numba()
    return kernel(*args)


_parallel_lock = threading.Lock()
_parallel_launches_must_take_turns: bool | None = None  # None until the first parallel kernel has run


def _run_parallel(kernel, *args):
    """Call a ``parallel=True`` kernel (the matvecs).

    Numba's OpenMP and TBB threading layers take parallel launches from several Python
    threads at once (a server's concurrent requests).  Its last resort, the workqueue
    layer (where neither libgomp nor TBB is installed, e.g. slim containers), aborts the
    whole process instead; there, launches take turns behind a lock.
    """
    global _parallel_launches_must_take_turns
    if _parallel_launches_must_take_turns is False:
        return _run(kernel, *args)
    with _parallel_lock:
        result = _run(kernel, *args)
        if _parallel_launches_must_take_turns is None:
            _parallel_launches_must_take_turns = numba.threading_layer() == "workqueue"
        return result


# --------------------------------------------------------------------------- threads

_max_threads = numba.config.NUMBA_NUM_THREADS  # for the big kernels; see set_threads
_numba_threads = threading.local()  # Numba's thread count is per calling thread


def set_threads(n: int | None) -> int:
    """Threads for the big kernels (default: NUMBA_NUM_THREADS, i.e. all cores). Returns the count."""
    global _max_threads
    if n is not None:
        _max_threads = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    return _max_threads


def _set_numba_threads(n: int) -> None:
    """Numba's thread count for the calling thread; only calls Numba when it changes."""
    if getattr(_numba_threads, "count", None) != n:
        numba.set_num_threads(n)
        _numba_threads.count = n


class _DecodeThreads:
    """One thread or all for the decode matvecs, chosen by measuring both.

    The matvecs run in phases of PHASE_CALLS calls (about one token of a small model)
    on one thread count, and the phase's seconds per weight are kept for that count.
    The next phase uses the faster count, except that now and then a phase tries the
    other one; each time that try loses, tries get rarer (up to every MAX_GAP phases),
    and a try that wins switches.  Whole phases, not single calls: OpenMP's threads
    are only quick to wake while they are still spinning from the previous call, so a
    lone parallel call always measures slow.
    """

    PHASE_CALLS = 256
    MAX_GAP = 64

    def __init__(self) -> None:
        # All threads first: a process's first matvecs include prefill's output head (Gemma 3's
        # 262144 x 640 Q8_0: 8.3 ms on one thread, 4.5 on two); a busy second core costs one phase.
        self.threads = _max_threads  # for the current phase
        self.trying = False  # is the current phase a try of the slower count?
        self.seconds_per_weight: dict[int, float] = {}  # thread count -> its last phase's
        self.calls, self.seconds, self.weights = 0, 0.0, 0
        self.gap, self.phases_since_try = 2, 0

    def choose(self, n_weights: int) -> int:
        if n_weights < PARALLEL_MIN_WEIGHTS or _max_threads == 1:
            return 1
        if self.threads not in (1, _max_threads):  # set_threads changed the count
            self.__init__()
        return self.threads

    def record(self, n_weights: int, threads: int, seconds: float) -> None:
        if n_weights < PARALLEL_MIN_WEIGHTS or threads != self.threads:
            return
        self.calls, self.seconds, self.weights = self.calls + 1, self.seconds + seconds, self.weights + n_weights
        if self.calls == self.PHASE_CALLS:
            self.seconds_per_weight[self.threads] = self.seconds / self.weights
            self.calls, self.seconds, self.weights = 0, 0.0, 0
            self.threads = self._next_phase()

    def _next_phase(self) -> int:
        one, many = self.seconds_per_weight.get(1), self.seconds_per_weight.get(_max_threads)
        if one is None or many is None:  # measure each count once first
            return _max_threads if many is None else 1
        faster, slower = (1, _max_threads) if one <= many else (_max_threads, 1)
        if self.trying:  # a try that won resets the gap; one that lost doubles it
            self.gap = 2 if self.threads == faster else min(2 * self.gap, self.MAX_GAP)
            self.trying, self.phases_since_try = False, 0
        else:
            self.phases_since_try += 1
        if self.phases_since_try >= self.gap:
            self.trying = True
            return slower
        return faster


_decode_threads = _DecodeThreads()


_helpers: ThreadPoolExecutor | None = None
_helpers_lock = threading.Lock()


def _helper_threads() -> ThreadPoolExecutor:
    """The tile threads besides the caller's (started on first use, then reused)."""
    global _helpers
    with _helpers_lock:
        if _helpers is None:
            _helpers = ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1), thread_name_prefix="refllm-tile")
        return _helpers


def run_tasks(task: Callable[[int], None], n_tasks: int) -> None:
    """Call task(0), ..., task(n_tasks - 1), on up to ``set_threads()`` threads, the caller's included.

    Each thread takes the next index until none is left (``next`` on a shared counter is
    atomic), so a thread slowed down by another process simply takes fewer tasks.  The
    tasks must release the GIL for their heavy part (nogil kernels).
    """
    threads = min(_max_threads, n_tasks)
    if threads <= 1:
        for i in range(n_tasks):
            task(i)
        return
    next_task = itertools.count()
    finished = itertools.count(1)
    all_finished = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        i = next(next_task)
        while i < n_tasks:
            try:
                task(i)
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                errors.append(error)
            if next(finished) == n_tasks:
                all_finished.set()
            i = next(next_task)

    for _ in range(threads - 1):
        _helper_threads().submit(work)
    work()
    # Wait for the tasks, not for the helpers: a helper that only gets a core after
    # the caller took every task finds none left and returns; nobody waits for it.
    all_finished.wait()
    if errors:
        raise errors[0]


def _chunks(n: int, n_chunks: int) -> list[tuple[int, int]]:
    """[start, stop) ranges that cut range(n) into ``n_chunks`` near-equal parts."""
    bounds = np.linspace(0, n, n_chunks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# --------------------------------------------------------------------------- aligned memory

CACHE_LINE = 64  # bytes; also the width of an AVX-512 register


def aligned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on a 64-byte (cache-line) boundary.

    matmul_nt loads 64 bytes at a time from each row of x and w.  NumPy's allocator
    (malloc) only promises 16-byte alignment, and from an address 16 bytes past a
    boundary every such load straddles two cache lines.  Measured, one core, 128 tokens:
    200 vs 163-166 GFLOP/s at k = 640 and 1024, 151 vs 130 at k = 2048.  (Rows stay
    aligned when k is a multiple of 16, as in every model's shapes.)
    """
    n_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    buffer = np.empty(n_bytes + CACHE_LINE, dtype=np.uint8)
    start = -buffer.ctypes.data % CACHE_LINE
    return buffer[start : start + n_bytes].view(dtype).reshape(shape)


def aligned(x: np.ndarray) -> np.ndarray:
    """x as C-contiguous float32 starting on a cache line: x itself when it already is, else a copy."""
    if x.dtype == np.float32 and x.flags.c_contiguous and x.ctypes.data % CACHE_LINE == 0:
        return x
    out = aligned_empty(x.shape)
    out[...] = x
    return out


_tile_buffers = threading.local()  # each tile thread's reusable buffer for its dequantized tiles


def _tile_buffer(n_rows: int, k: int) -> np.ndarray:
    """This thread's f32[n_rows, k] scratch for one dequantized tile (aligned, reused across calls)."""
    buffer = getattr(_tile_buffers, "buffer", None)
    if buffer is None or buffer.size < n_rows * k:
        buffer = _tile_buffers.buffer = aligned_empty((max(n_rows * k, TILE_WEIGHTS),))
    return buffer[: n_rows * k].reshape(n_rows, k)


# --------------------------------------------------------------------------- weights


def _rows(w: TensorInfo) -> np.ndarray:
    """The weight's raw bytes as uint8 [n_rows, row_bytes] (a view into the mmap, read-only)."""
    n_rows = math.prod(w.shape[:-1])  # (w.n_elements // w.shape[-1], but NumPy's prod costs ~3 us a call)
    rows = w.raw.reshape(n_rows, -1)
    if rows.flags.writeable:  # one compiled signature for mmap views and test arrays alike
        rows = rows.view()
        rows.flags.writeable = False
    return rows


def matvec(w: TensorInfo, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """W @ x for one token.  w: shape (m, k);  x: f32[k] -> y: f32[m] (written into ``y`` if given)."""
    matvec_kernel, _, inner = KERNELS[w.ggml_type.name]
    rows = _rows(w)  # [m, row_bytes]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if y is None:
        y = np.empty(rows.shape[0], dtype=np.float32)  # [m]
    n_weights = rows.shape[0] * x.shape[0]
    threads = _decode_threads.choose(n_weights)
    _set_numba_threads(threads)
    start = time.perf_counter()
    _run_parallel(matvec_kernel, rows, x, y, F16_TO_F32, inner)
    _decode_threads.record(n_weights, threads, time.perf_counter() - start)
    return y


def dequantize_rows(w: TensorInfo, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [n, row_bytes] blocks of ``w`` -> f32[n, k] (into ``out`` if given), on the calling thread."""
    _, dequantize_kernel, inner = KERNELS[w.ggml_type.name]
    if rows.flags.writeable:
        rows = rows.view()
        rows.flags.writeable = False
    if out is None:
        out = np.empty((rows.shape[0], w.shape[-1]), dtype=np.float32)  # [n, k]
    _run(dequantize_kernel, rows, out, F16_TO_F32, inner)
    return out


def _row_tiles(m: int, k: int) -> list[tuple[int, int]]:
    """Tiles of about TILE_WEIGHTS weights over m rows of k, as [start, stop) row ranges.

    Their count is a multiple of the thread count (every thread gets the same share) and
    each tile is a multiple of 16 rows (a tile's output columns fill whole cache lines).
    """
    n_tiles = max(1, round(m * k / TILE_WEIGHTS))
    n_tiles = -(-n_tiles // _max_threads) * _max_threads  # round up to whole rounds
    per_tile = -(-m // n_tiles)  # ceil
    per_tile = -(-per_tile // 16) * 16
    return [(start, min(m, start + per_tile)) for start in range(0, m, per_tile)]


def linear(x: np.ndarray, w: TensorInfo) -> np.ndarray:
    """``x @ W.T``.  x: f32[n, k];  w: shape (m, k)  ->  f32[n, m]."""
    if x.shape[0] <= MATVEC_MAX_TOKENS or not supports(w.ggml_type):
        return _linear_untiled(x, w)  # decode's path, kept free of the tiles' bookkeeping
    return linears(x, [w])[0]


def _linear_untiled(x: np.ndarray, w: TensorInfo) -> np.ndarray:
    """``x @ W.T`` without prefill tiles: a matvec per token, or the reference for a type without a kernel."""
    if not supports(w.ggml_type):
        return reference.linear(x, w)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)  # [n, m]
    for t in range(x.shape[0]):
        matvec(w, x[t], out[t])
    return out


def linears(x: np.ndarray, ws: list[TensorInfo]) -> list[np.ndarray]:
    """``[x @ W.T for W in ws]``, the projections of one input (q, k, v; gate, up).

    Decode: one matvec per weight and token.  Prefill: the tiles of every weight are shared
    out in one ``run_tasks``, so the threads wait for each other once, not once per weight
    (measured, Gemma 3, 128 tokens, 2 threads: prefill ~6% faster than three + two hand-offs).
    x: f32[n, k];  each w: shape (m_i, k)  ->  f32[n, m_i] each.
    """
    n = x.shape[0]
    outs: list[np.ndarray | None] = [None] * len(ws)
    tiles = []  # (output index, weight, its raw rows, first row, end row)
    for i, w in enumerate(ws):
        if n <= MATVEC_MAX_TOKENS or not supports(w.ggml_type):
            outs[i] = _linear_untiled(x, w)
        else:
            rows = _rows(w)  # [m, row_bytes]
            outs[i] = aligned_empty((n, rows.shape[0]))  # [n, m]
            tiles += [(i, w, rows, start, stop) for start, stop in _row_tiles(rows.shape[0], w.shape[-1])]
    if not tiles:
        return outs
    x = aligned(x)  # [n, k], cache-line aligned for matmul_nt

    def multiply_tile(j: int) -> None:
        i, w, rows, start, stop = tiles[j]
        weights = dequantize_rows(w, rows[start:stop], _tile_buffer(stop - start, w.shape[-1]))  # [tile, k], this thread's
        _run(numba_ops.matmul_nt, x, weights, outs[i], start)  # out[:, start:stop] = [n, k] @ [k, tile]

    run_tasks(multiply_tile, len(tiles))
    return outs


def embedding_rows(w: TensorInfo, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of an embedding table.  w: shape (n_vocab, d);  ids: int[n] -> f32[n, d]."""
    if not supports(w.ggml_type):
        return reference.embedding_rows(w, ids)
    ids = np.asarray(ids, dtype=np.int64)
    rows = _rows(w)
    if ids.size and (ids.min() < 0 or ids.max() >= rows.shape[0]):
        return reference.embedding_rows(w, ids)  # raises the reference's clear error
    return dequantize_rows(w, rows[ids])  # copies only the chosen rows' bytes


# --------------------------------------------------------------------------- small ops


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x: f32[..., d] -> f32[..., d]."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])  # [rows, d]
    # The input of the next linear: aligned for prefill's matmul_nt (aligned_empty costs ~3 us
    # against ~0.4 for np.empty, which decode's ~100 norms a token need not pay).
    out = aligned_empty(flat.shape) if flat.shape[0] > MATVEC_MAX_TOKENS else np.empty_like(flat)
    _run(numba_ops.rms_norm_rows, flat, np.ascontiguousarray(weight, dtype=np.float32), float(eps), out)
    return out.reshape(x.shape)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    if axis not in (-1, x.ndim - 1):
        return reference.softmax(x, axis=axis)
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    _run(numba_ops.softmax_rows, flat, out)
    return out.reshape(x.shape)


def rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, neox: bool, mscale: float = 1.0) -> np.ndarray:
    """x: f32[n, heads, hd] -> rotated copy."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)  # [n, heads, hd]
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    inv_freq = np.ascontiguousarray(inv_freq, dtype=np.float32)
    _run(numba_ops.rope_inplace, out, positions, inv_freq, bool(neox), float(mscale))
    return out


def attention(q, k_cache, v_cache, positions, scale: float, window: int | None = None) -> np.ndarray:
    """q: f32[n, heads, hd]; caches f32[n_ctx, kv_heads, hd(_v)] -> f32[n, heads, hd_v]."""
    n, heads, _ = q.shape
    out = np.empty((n, heads, v_cache.shape[2]), dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    k_cache = np.ascontiguousarray(k_cache, dtype=np.float32)
    v_cache = np.ascontiguousarray(v_cache, dtype=np.float32)
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    scale, window = float(scale), int(window or 0)
    if n < PARALLEL_ATTENTION_MIN_TOKENS:
        _run(numba_ops.attention_rows, q, k_cache, v_cache, positions, scale, window, out)
        return out
    # Prefill: one task per (chunk of query tokens, key/value head): two matrix products
    # around a masked softmax (measured, 128 tokens, one thread: SmolLM2 0.93 -> 0.73 ms,
    # Gemma 3 1.0 -> 0.5 ms per layer; 512 tokens 18.5 -> 9.4 ms; attention_rows' per-key
    # dot products before).
    chunks = _chunks(n, -(-n // ATTENTION_CHUNK_TOKENS))[::-1]  # the latest queries first: they see the most keys
    kv_heads = k_cache.shape[1]

    def attend(i: int) -> None:
        a, b = chunks[i // kv_heads]
        _attend_chunk(q[a:b], k_cache, v_cache, positions[a:b], scale, window, i % kv_heads, out[a:b])

    run_tasks(attend, len(chunks) * kv_heads)
    return out


def _attend_chunk(q, k_cache, v_cache, positions, scale: float, window: int, kv: int, out) -> None:
    """Attention of a chunk of query tokens, for the query heads that share key/value head ``kv``.

    q: f32[c, heads, hd] (c tokens);  out: f32[c, heads, hd_v], written for those heads.
    Same math as ``reference.attention``: scores = q . k * scale, masked, softmax, times v.
    """
    c, heads, hd = q.shape
    group = heads // k_cache.shape[1]
    first_key = max(0, int(positions.min()) - window + 1) if window else 0
    last_key = min(int(positions.max()), k_cache.shape[0] - 1)
    keys = k_cache[first_key : last_key + 1, kv]  # [n_keys, hd]
    values = v_cache[first_key : last_key + 1, kv]  # [n_keys, hd_v]

    queries = aligned(q[:, kv * group : (kv + 1) * group].reshape(c * group, hd) * np.float32(scale))  # [c * group, hd]
    scores = np.empty((c * group, keys.shape[0]), dtype=np.float32)  # [c * group, n_keys]
    _run(numba_ops.matmul_nt, queries, aligned(keys), scores, 0)  # queries @ keys.T
    probs = aligned_empty(scores.shape)
    _run(numba_ops.causal_softmax_rows, scores, positions, first_key, window, group, probs)  # masked keys -> 0
    mixed = np.empty((c * group, values.shape[1]), dtype=np.float32)  # [c * group, hd_v]
    _run(numba_ops.matmul_nt, probs, aligned(values.T), mixed, 0)  # probs @ values
    out[:, kv * group : (kv + 1) * group] = mixed.reshape(c, group, -1)  # [c, group, hd_v]


_warmed_types: set[str] = set()  # quant types whose kernels warm_up has loaded
_float32_ops_warmed = False


def warm_up(ggml_types=()) -> float:
    """Compile (or load from cache) the kernels a model needs, before the first token. Returns seconds.

    Each kernel is loaded once per process: a second call for the same types returns at once.
    """
    global _float32_ops_warmed
    start = time.perf_counter()
    names = {getattr(t, "name", str(t)) for t in ggml_types} & set(KERNELS)
    for name in sorted(names - _warmed_types):
        matvec_kernel, dequantize_kernel, inner = KERNELS[name]
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
        rows = np.zeros((1, 256 // block_size * type_size), dtype=np.uint8)
        rows.flags.writeable = False
        x = np.ones(256, dtype=np.float32)
        _run_parallel(matvec_kernel, rows, x, np.empty(1, np.float32), F16_TO_F32, inner)
        _run(dequantize_kernel, rows, np.empty((1, 256), np.float32), F16_TO_F32, inner)
        _warmed_types.add(name)
    if not _float32_ops_warmed:  # the float32 ops every model runs
        _run(numba_ops.matmul_nt, np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), np.empty((2, 2), np.float32), 0)
        h = np.ones((2, 2, 4), dtype=np.float32)
        rms_norm(h, np.ones(4, np.float32), 1e-6)
        rope(h, np.arange(2), np.ones(2, np.float32), True)
        rope(h, np.arange(2), np.ones(2, np.float32), False)
        attention(h, h, h, np.arange(2), 0.5)
        attention(np.ones((PARALLEL_ATTENTION_MIN_TOKENS, 2, 4), np.float32), h, h, np.zeros(PARALLEL_ATTENTION_MIN_TOKENS, np.int64), 0.5)
        _float32_ops_warmed = True
    return time.perf_counter() - start


BACKEND = Backend(
    name="numba",
    linear=linear,
    linear_many=linears,
    embedding_rows=embedding_rows,
    rms_norm=rms_norm,
    rope=rope,
    attention=attention,
    silu=reference.silu,  # NumPy's: see the module docstring
    gelu_tanh=reference.gelu_tanh,
    softmax=softmax,
)
