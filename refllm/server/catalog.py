"""The model-management side of the API, as thin calls into the model store (``refllm.store``).

    /api/tags, /v1/models   refllm.store.listing.list_models: the store's + the built-in catalog models
    /api/show               refllm.store.listing.show
    /api/copy               refllm.store.listing.copy (a catalog source is added to the store under the new name)
    /api/ps                 running_entries
    /api/delete             store.delete
    /api/create, /api/pull  store.create / store.pull, progress streamed as Ollama's status objects
    /api/blobs/:digest      store.has_blob / store.write_blob

Over HTTP a model is only ever named, never given as a file path: ``FROM`` in a created
model must be a model name or an uploaded blob's digest.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from refllm import store
from refllm.engine import LoadedModel, ModelRecipe, validate_model_name
from refllm.errors import InvalidRequest
from refllm.packaged_models import find_catalog_entry
from refllm.sample.options import DEFAULT_NUM_CTX
from refllm.store.listing import details, file_digest, list_models, rfc3339
from refllm.store.blobs import normalize_digest

def default_context(loaded: LoadedModel) -> int:
    """The context a request that sets no num_ctx gets (what Ollama's /api/ps reports: the context
    the model was loaded with): the model's num_ctx PARAMETER, else 4096, at most its training context."""
    num_ctx = int(loaded.recipe.params.get("num_ctx") or DEFAULT_NUM_CTX)
    return min(num_ctx, loaded.context_length) if loaded.context_length else num_ctx


def running_entries(running: list[LoadedModel]) -> list[dict]:
    """/api/ps's entries, with the digest and details /api/tags gives each model (a store model's
    digest is its manifest's, as in Ollama); the listing is read once for all of them."""
    listed = {entry["name"]: entry for entry in list_models()} if running else {}
    return [_running_entry(loaded, listed.get(loaded.name)) for loaded in running]


def _running_entry(loaded: LoadedModel, listed: dict | None) -> dict:
    """One /api/ps entry.  On the cuda backend every weight runs from the GPU's memory
    (uploaded once), so size_vram is the whole size, as Ollama reports a fully offloaded model."""
    path = loaded.recipe.gguf_path
    on_gpu = getattr(loaded.model, "backend", "") == "cuda"
    return {
        "name": loaded.name, "model": loaded.name, "size": loaded.size,
        "digest": listed["digest"] if listed else file_digest(path).removeprefix("sha256:"),
        "details": listed["details"] if listed else details(path),
        "expires_at": rfc3339(loaded.expires_at), "size_vram": loaded.size if on_gpu else 0,
        "context_length": default_context(loaded), "processor": "100% GPU" if on_gpu else "100% CPU",
    }


def check_deletable(recipe: ModelRecipe, name: str) -> None:
    """A built-in catalog model is listed but not in the store: a 400 that says so (not a 404)."""
    if recipe.source == "catalog":
        entry = find_catalog_entry(name.lower())
        package = f" (pip uninstall {entry.package})" if entry is not None else ""
        raise InvalidRequest(f"'{recipe.name}' is a built-in catalog model, installed with its PyPI package{package}; "
                             "it is not in the model store, so there is nothing to delete")


def delete(name: str) -> None:
    store.delete(name)


def _with_progress(work: Callable[[Callable[[dict], None]], object]) -> Iterator[dict]:
    """Run ``work(progress)`` on a thread; yield its progress objects, ending with one ``{"status": "success"}``
    (the store's pull and create send it themselves; it is added only if ``work`` did not).

    An error in ``work`` is raised here, in the consumer (NDJSON sends it in-band).
    """
    updates: queue.Queue = queue.Queue()
    done = object()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work(updates.put)
        except BaseException as e:  # handed over to the consumer
            failure.append(e)
        finally:
            updates.put(done)

    threading.Thread(target=run, name="refllm-store-job", daemon=True).start()
    last: dict = {}
    while (update := updates.get()) is not done:
        last = dict(update)
        yield last
    if failure:
        raise failure[0]
    if last != {"status": "success"}:
        yield {"status": "success"}


def pull(name: str) -> Iterator[dict]:
    return _with_progress(lambda progress: store.pull(name, progress=progress))


def _from_reference(value: object) -> str:
    """``FROM`` over HTTP: a store or catalog model, or an uploaded blob's digest; never a path on the server."""
    if isinstance(value, str) and value.lower().startswith(("sha256:", "sha256-")):
        return normalize_digest(value)
    name = validate_model_name(value, "from")
    if store.resolve(name).source not in ("store", "catalog"):  # 404 when it is nothing at all
        raise InvalidRequest(f"field 'from': {name!r} is not a model in the store or the catalog")
    return name


def modelfile_from_request(body: dict) -> store.Modelfile:
    """Ollama's create request (``from``/``files``/``system``/... or a legacy ``modelfile`` text) as a Modelfile."""
    if body.get("adapters"):
        raise InvalidRequest("field 'adapters' is not supported: LoRA adapters are not implemented")
    if body.get("modelfile") is not None:
        if not isinstance(body["modelfile"], str):
            raise InvalidRequest("field 'modelfile' must be a string")
        modelfile = store.parse_modelfile(body["modelfile"])
        modelfile.from_ = _from_reference(modelfile.from_)
        return modelfile
    files = body.get("files")
    if files is not None:
        if not isinstance(files, dict) or len(files) != 1 or not all(isinstance(v, str) for v in files.values()):
            raise InvalidRequest("field 'files' must map one GGUF file name to its blob digest")
        from_ = _from_reference(next(iter(files.values())))
    elif body.get("from") is not None:
        from_ = _from_reference(body.get("from"))
    else:
        raise InvalidRequest("field 'from' (a model name) or 'files' (an uploaded GGUF blob) is required")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("field 'parameters' must be an object")
    from refllm.sample import Options

    Options.from_dict({k: v for k, v in parameters.items()})  # unknown or mistyped parameters: 400 now
    license_value = body.get("license")
    if isinstance(license_value, list) and all(isinstance(x, str) for x in license_value):
        license_value = "\n".join(license_value)
    for field_name, value in (("system", body.get("system")), ("template", body.get("template")), ("license", license_value)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"field {field_name!r} must be a string")
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                  and isinstance(m.get("content", ""), str) for m in messages):
        raise InvalidRequest("field 'messages' must be an array of {\"role\", \"content\"} objects")
    return store.Modelfile(from_=from_, parameters=dict(parameters), system=body.get("system"),
                           template=body.get("template"), license=license_value,
                           messages=[{"role": m["role"], "content": m.get("content", "")} for m in messages])


def create(name: str, body: dict) -> Iterator[dict]:
    modelfile = modelfile_from_request(body)
    quantize = body.get("quantize")
    if quantize is not None and not isinstance(quantize, str):
        raise InvalidRequest("field 'quantize' must be a string")
    return _with_progress(lambda progress: store.create(name, modelfile, quantize=quantize, progress=progress))


def has_blob(digest: str) -> bool:
    return store.has_blob(normalize_digest(digest))


def save_blob(digest: str, stream) -> None:
    store.write_blob(normalize_digest(digest), stream)
