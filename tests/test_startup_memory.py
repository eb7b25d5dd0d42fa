"""Start-up cost of the real models: what ``refllm run`` imports, what the tokenizer keeps,
what an empty KV cache commits. (Speed is measured by tools/bench_vs_llamacpp.py, not here.)

Memory is read from /proc/self/status (Linux, where CI runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_run_imports_neither_the_server_nor_scipy(smollm2_gguf):
    """``refllm run`` answers without Flask/Waitress (only ``serve`` needs them) or SciPy (Numba's BLAS probe)."""
    result = _python(
        "import json, sys\n"
        "from refllm.cli.main import main\n"
        f"code = main(['run', {str(smollm2_gguf)!r}, 'hi', '-n', '1'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug', 'waitress', 'scipy', 'torch'})\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'scipy_linalg': 'scipy.linalg' in sys.modules}))\n"
    )
    assert result["code"] == 0
    assert result["heavy"] in ([], ["scipy"])  # scipy's top package may come with NumPy helpers; its linalg must not
    assert result["scipy_linalg"] is False


@pytest.mark.parametrize("command", [["list"], ["show", "smollm2"]])
def test_model_listing_commands_do_not_import_the_server(command, tmp_path):
    """``refllm list`` and ``show`` read the store and the catalog (refllm.store.listing), not the
    server's modules: importing Flask cost ``list`` ~0.5 s."""
    result = _python(
        "import json, os, sys\n"
        f"os.environ['REFLLM_MODELS'] = {str(tmp_path)!r}\n"
        "from refllm.cli.main import main\n"
        f"code = main({command!r})\n"
        "print(json.dumps({'code': code, 'server': sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'waitress') or m.startswith('refllm.server'))}))\n"
    )
    assert result == {"code": 0, "server": []}


def test_gemma_tokenizer_keeps_little_memory(gemma3_gguf):
    """Building Gemma's 262k-token tokenizer: its temporaries are handed back, only the tokenizer stays.

    Measured here: ~68 MiB retained, which is also the peak (the Python vocabulary and its
    token -> id dict; the SentencePiece encoder adds only a score rank per token). With HF's
    Rust BPE over derived merges it was ~119 MiB kept, peak ~+222 MiB (211-250 MiB kept before
    its temporaries were handed back). The bounds leave room for allocator noise.
    """
    result = _python(
        "import json\n"
        "import refllm.gguf\n"
        "import tokenizers, numpy\n"
        "from refllm.tokenizer import tokenizer_from_gguf\n"
        "def status(key):\n"
        "    return int(open('/proc/self/status').read().split(key + ':')[1].split()[0]) / 1024\n"
        f"gguf_file = refllm.gguf.read({str(gemma3_gguf)!r})\n"
        "before = status('VmRSS')\n"
        "tok = tokenizer_from_gguf(gguf_file)\n"
        "print(json.dumps({'kept': status('VmRSS') - before, 'peak': status('VmHWM') - before,\n"
        "                  'ids': tok.encode('Hello world')}))\n"
    )
    assert result["ids"][0] == 2 and len(result["ids"]) == 3  # <bos> Hello ▁world: it works
    assert result["kept"] < 100, f"the tokenizer keeps {result['kept']:.0f} MiB"
    assert result["peak"] < 130, f"building it peaked at +{result['peak']:.0f} MiB"


def test_a_big_kv_cache_costs_only_the_positions_used(gemma3_gguf):
    """Gemma 3 at num_ctx 4096 reserves 151 MiB of cache (36 arrays of 4 MiB); a short prompt uses 8 positions.

    With ``np.zeros`` arrays this forward committed ~8 MiB more (up to ~28 MiB in a full
    ``refllm run``) than the same forward on a 64-position cache.  Measured in a fresh
    interpreter: in the test process, memory freed by earlier tests blurs the reading.
    """
    result = _python(
        "import json\n"
        "import numpy as np\n"
        "import refllm\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        f"model = refllm.load({str(gemma3_gguf)!r})\n"
        "ids = np.array(model.tokenize('Why is the sky blue?'))\n"
        "model.forward(ids, model.new_cache(64))  # weights, kernels, scratch now in memory\n"
        "before = rss()\n"
        "cache = model.new_cache(4096)\n"
        "model.forward(ids, cache)\n"
        "grown = rss() - before\n"
        "filled = bool(cache.keys[0][: len(ids)].any()) and float(cache.keys[0][len(ids):].max()) == 0.0\n"
        "print(json.dumps({'grown': grown, 'n': len(ids), 'filled': filled}))\n"
    )
    assert result["filled"]
    assert result["grown"] < 4, f"{result['grown']:.1f} MiB committed for {result['n']} positions"
