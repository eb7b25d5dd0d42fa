"""The engine: one place that loads models on demand, queues requests and runs generations.

The HTTP codecs (``refllm.server``) turn an Ollama or OpenAI request into one
``GenerationRequest`` (or an embedding call) and turn the engine's events back into
their wire format; everything between is here:

    name ──resolve──► ModelRecipe ──load (once, kept for keep_alive)──► LoadedModel
    request ──► LoadedModel.queue (bounded, FIFO, num_parallel slots) ──► model.generate(...)
            ──► Piece, Piece, ..., Finished      (closing the stream stops generation)

Loaded models stay in memory for their ``keep_alive`` after their last request; a
background thread unloads expired ones, and loading a model beyond
``max_loaded_models`` first unloads the idle model that expires soonest.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from refllm.engine.keep_alive import DEFAULT_KEEP_ALIVE_S, parse_keep_alive
from refllm.engine.names import validate_model_name
from refllm.engine.queue import ClientGone, RequestQueue, ServerBusy
from refllm.errors import InvalidRequest


@dataclass
class EngineSettings:
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S  # REFLLM_KEEP_ALIVE
    num_parallel: int = 1  # REFLLM_NUM_PARALLEL: concurrent generations per model
    max_queue: int = 512  # REFLLM_MAX_QUEUE: requests allowed to wait per model
    max_loaded_models: int = 3  # REFLLM_MAX_LOADED_MODELS
    queue_timeout_s: float | None = None  # how long a queued request may wait (None: no limit)
    backend: str | None = None  # compute backend for every model (runtime.device "cuda" -> "cuda"); None: the model's default


@dataclass
class ModelRecipe:
    """What a model name stands for: the GGUF file plus the store's defaults for it."""

    name: str
    gguf_path: Path
    params: dict = field(default_factory=dict)  # default options (Modelfile PARAMETER lines)
    system: str | None = None
    template: str | None = None
    messages: list = field(default_factory=list)
    license: str | None = None
    source: str = "store"  # "store", "file" or "catalog" (see refllm.store.resolve)


@dataclass
class GenerationRequest:
    """One generation, whichever API it came from."""

    model: str
    prompt: str | list[dict]  # a completion prompt, or chat messages [{"role", "content"}, ...]
    raw: bool = False  # True: the prompt goes to the model as is, no chat template
    system: str | None = None
    template: str | None = None  # Ollama's per-request TEMPLATE override (Go template syntax)
    images: list = field(default_factory=list)
    options: dict = field(default_factory=dict)  # Ollama option names: temperature, num_predict, stop, ...
    logprobs: bool = False
    top_logprobs: int = 0
    keep_alive: object = None  # as given by the client; parsed by parse_keep_alive
    output: Any = None  # refllm.chat.turn.OutputRules: format, tools, tool_choice, think (None: free text)
    cache_key: str | None = None  # a server session's own KV cache in the loaded model (None: the queue slot's)


@dataclass
class LogprobEntry:
    """One sampled token as text, with its log-probability and the most likely alternatives (Ollama/OpenAI shape)."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[dict] = field(default_factory=list)  # [{"token", "logprob", "bytes"}, ...]

    def as_dict(self, with_top: bool = True) -> dict:
        entry = {"token": self.token, "logprob": self.logprob, "bytes": self.bytes}
        if with_top:
            entry["top_logprobs"] = self.top_logprobs
        return entry


@dataclass
class Piece:
    """A streamed bit of output text and the tokens that made it."""

    text: str
    logprobs: list[LogprobEntry] = field(default_factory=list)
    thinking: str = ""  # reasoning text (refllm.thinking), apart from the answer
    tool_calls: list = field(default_factory=list)  # refllm.chat.tools.ToolCall, each once, when complete


@dataclass
class Finished:
    """The last event of a generation: totals and timings (nanoseconds, as Ollama reports them)."""

    text: str
    done_reason: str  # "stop" (end of generation or stop string) or "length" (num_predict / context)
    prompt_tokens: int = 0  # the whole prompt: OpenAI's usage.prompt_tokens, and /api's prompt_eval_count as Ollama reports it
    prompt_eval_count: int = 0  # prompt tokens evaluated now (not reused from the slot's KV cache): what prompt_eval_duration timed
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    logprobs: list[LogprobEntry] = field(default_factory=list)
    thinking: str = ""
    tool_calls: list = field(default_factory=list)


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    prompt_eval_count: int
    load_duration: int
    total_duration: int


@dataclass
class LoadedModel:
    name: str
    recipe: ModelRecipe
    model: Any
    size: int  # bytes of the GGUF file (memory-mapped)
    queue: RequestQueue
    keep_alive_s: float
    expires_at: float = math.inf  # wall-clock seconds; inf while a request holds it or for "forever"
    users: int = 0  # requests waiting for or holding a slot; a model with users is never unloaded
    loaded_at: float = field(default_factory=time.time)
    sessions: dict[int, Any] = field(default_factory=dict)  # slot -> refllm.generate.Session (its own KV cache)
    ready: bool = False  # tokenizer, chat template and weights built (once, under ready_lock)
    ready_lock: threading.Lock = field(default_factory=threading.Lock)

    def ensure_ready(self) -> int:
        """Build the model's lazy parts once, whichever slot asks first; return the ns it took."""
        with self.ready_lock:
            if self.ready:
                return 0
            from refllm.generate import prepare

            took = prepare(self.model)  # tokenizer, chat template, weights, kernels
            self.ready = True
            return took

    def session(self, slot: int):
        """The slot's KV cache and the tokens in it; the next request in this slot reuses their common prefix."""
        if slot not in self.sessions:
            from refllm.generate import Session

            self.sessions[slot] = Session()
        return self.sessions[slot]

    @property
    def context_length(self) -> int:
        return int(getattr(self.model, "n_ctx_train", 0) or 0)


# -- resolving and loading (replaceable, so tests can hand in small fakes)


def default_resolver(name: str) -> ModelRecipe:
    """A model-store name, else a built-in catalog model (``smollm2``, ``gemma3``): ``refllm.store.resolve``."""
    from refllm import store

    found = store.resolve(name)
    return ModelRecipe(name=found.name, gguf_path=Path(found.gguf_path), params=dict(found.params or {}),
                       system=found.system, template=found.template, messages=list(found.messages or []),
                       license=found.license, source=found.source)


def default_loader(recipe: ModelRecipe):
    from refllm.gguf import read
    from refllm.model.loaded import Model
    from refllm.tokenizer.chat import chat_template_for

    model = Model(read(recipe.gguf_path), name=recipe.name)
    if recipe.template:  # the Modelfile's TEMPLATE replaces the GGUF's chat template
        model.chat_template = chat_template_for(model.gguf, model.tokenizer, override=recipe.template)
    return model


class GenerationStream:
    """Iterator of ``Piece`` events ending with one ``Finished``; holds a queue slot until closed.

    ``close()`` (called by the WSGI server when the client goes away, or by ``collect``)
    closes the model's generator, which stops generating, and frees the slot.
    """

    def __init__(self, first, events: Iterator, release: Callable[[], None], cancelled: Callable[[], bool] | None = None):
        self._pending = [first]  # the event the engine already pulled (to raise request errors early)
        self._events = events
        self._release = release
        self._cancelled = cancelled  # the client disconnected? (checked between events)
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        if self._pending:
            return self._pending.pop()
        if self._cancelled is not None and self._cancelled():
            self.close()
            raise ClientGone("the client disconnected")
        try:
            return next(self._events)
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        finally:
            self._release()

    def collect(self) -> Finished:
        """Run to the end (non-streaming requests) and return the ``Finished`` event."""
        return collect_finished(self)


def collect_finished(events) -> Finished:
    """Run a stream of events (``Piece``..., ``Finished``) to its end, close it, return the ``Finished``."""
    try:
        finished = None
        for event in events:
            if isinstance(event, Finished):
                finished = event
        return finished
    finally:
        events.close()


class Engine:
    def __init__(self, settings: EngineSettings | None = None, *, resolver: Callable[[str], ModelRecipe] = default_resolver,
                 loader: Callable[[ModelRecipe], Any] = default_loader, reap_interval_s: float = 1.0):
        self.settings = settings or EngineSettings()
        self._resolve = resolver
        self._load = loader
        self._lock = threading.RLock()
        self._loaded: dict[str, LoadedModel] = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_forever, args=(reap_interval_s,), name="refllm-engine-reaper", daemon=True)
        self._reaper.start()

    # -- models

    def resolve(self, name: str) -> ModelRecipe:
        return self._resolve(validate_model_name(name))

    def running(self) -> list[LoadedModel]:
        self.expire()
        with self._lock:
            return list(self._loaded.values())

    def unload(self, name: str) -> bool:
        """Unload now if no request uses the model; otherwise it unloads when its last request ends."""
        with self._lock:
            loaded = self._loaded.get(self.resolve(name).name)
            if loaded is None:
                return False
            loaded.keep_alive_s = 0.0
            if loaded.users == 0:
                self._drop(loaded)
            return True

    def expire(self) -> None:
        now = time.time()
        with self._lock:
            for loaded in list(self._loaded.values()):
                if loaded.users == 0 and loaded.expires_at <= now:
                    self._drop(loaded)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for loaded in list(self._loaded.values()):
                self._drop(loaded)

    def _reap_forever(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.expire()

    def _drop(self, loaded: LoadedModel) -> None:
        self._loaded.pop(loaded.name, None)
        close = getattr(loaded.model, "close", None)
        if callable(close):
            close()

    def _make_room(self) -> None:
        """Unload idle models until one more fits under max_loaded_models."""
        while len(self._loaded) >= self.settings.max_loaded_models:
            idle = [m for m in self._loaded.values() if m.users == 0]
            if not idle:
                raise ServerBusy(f"server busy: all {len(self._loaded)} loaded models are in use (REFLLM_MAX_LOADED_MODELS={self.settings.max_loaded_models})")
            self._drop(min(idle, key=lambda m: m.expires_at))

    def load(self, name: str, keep_alive: object = None) -> tuple[LoadedModel, int]:
        """Load ``name`` if needed (no slot taken); returns the model and the load time in ns."""
        loaded, load_ns = self._checkout_model(name, keep_alive)
        self._checkin_model(loaded)
        return loaded, load_ns

    def _checkout_model(self, name: str, keep_alive: object) -> tuple[LoadedModel, int]:
        keep_alive_s = parse_keep_alive(keep_alive, default=self.settings.keep_alive_s)
        recipe = self.resolve(name)
        load_ns = 0
        with self._lock:
            loaded = self._loaded.get(recipe.name)
            if loaded is not None and loaded.recipe != recipe and loaded.users == 0:
                self._drop(loaded)  # the name now means something else (re-created, copied over): reload
                loaded = None
            if loaded is None:
                self._make_room()
                started = time.perf_counter_ns()
                model = self._load(recipe)
                if self.settings.backend is not None and hasattr(model, "backend"):
                    model.backend = self.settings.backend
                load_ns = time.perf_counter_ns() - started
                size = recipe.gguf_path.stat().st_size if recipe.gguf_path.exists() else 0
                loaded = LoadedModel(recipe.name, recipe, model, size, RequestQueue(self.settings.num_parallel, self.settings.max_queue), keep_alive_s)
                self._loaded[recipe.name] = loaded
            loaded.keep_alive_s = keep_alive_s  # the latest request decides, as in Ollama
            loaded.users += 1
            loaded.expires_at = math.inf
        return loaded, load_ns

    def _checkin_model(self, loaded: LoadedModel) -> None:
        with self._lock:
            loaded.users -= 1
            if loaded.users == 0:
                loaded.expires_at = time.time() + loaded.keep_alive_s
                if loaded.keep_alive_s == 0:
                    self._drop(loaded)

    def _take_slot(self, name: str, keep_alive: object, cancelled: Callable[[], bool] | None = None) -> tuple[LoadedModel, int, int]:
        loaded, load_ns = self._checkout_model(name, keep_alive)
        try:
            slot = loaded.queue.acquire(self.settings.queue_timeout_s, cancelled)
        except BaseException:
            self._checkin_model(loaded)
            raise
        return loaded, slot, load_ns

    def _release_slot(self, loaded: LoadedModel, slot: int) -> None:
        loaded.queue.release(slot)
        self._checkin_model(loaded)

    # -- generation

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool] | None = None) -> GenerationStream:
        """Start one generation. Errors in the request (bad options, too long, ...) raise here, before any output.

        ``cancelled()``, when given, tells whether the client is gone: a request then leaves the
        queue, or its generation stops, at the next check.
        """
        started = time.perf_counter_ns()
        loaded, slot, load_ns = self._take_slot(request.model, request.keep_alive, cancelled)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release_slot(loaded, slot)

        try:
            if request.images:
                raise InvalidRequest(f"model '{loaded.name}' is text-only: it does not accept images")
            load_ns += loaded.ensure_ready()
            events = _generation_events(loaded, slot, request, load_ns, started)
            first = next(events)  # surfaces request errors as exceptions, before the response starts
        except BaseException:
            release()
            raise
        return GenerationStream(first, events, release, cancelled)

    # -- embeddings

    def embed(self, name: str, inputs: list[str], *, truncate: bool = True, dimensions: int | None = None,
              options: dict | None = None, keep_alive: object = None) -> EmbedResult:
        from refllm.engine.embeddings import embed_texts

        started = time.perf_counter_ns()
        loaded, slot, load_ns = self._take_slot(name, keep_alive)
        try:
            load_ns += loaded.ensure_ready()
            vectors, n_tokens = embed_texts(loaded.model, inputs, truncate=truncate, dimensions=dimensions, options=options or {})
        finally:
            self._release_slot(loaded, slot)
        return EmbedResult(vectors, n_tokens, load_ns, time.perf_counter_ns() - started)


def _generation_events(loaded: LoadedModel, slot: int, request: GenerationRequest, load_ns: int, started_ns: int) -> Iterator:
    """Run ``model.generate(..., stream=True)`` in the slot's session; yield Piece ... Finished."""
    options = {**loaded.recipe.params, **request.options}  # request options override the model's defaults
    system = request.system if request.system is not None else loaded.recipe.system
    prompt, raw = request.prompt, request.raw
    if isinstance(prompt, list):  # chat: the model's stored messages, then the conversation
        prompt = [*loaded.recipe.messages, *prompt]
    if request.template and not raw:  # a per-request template: render here, hand the model the text
        from refllm.tokenizer.go_template import GoChatTemplate

        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if system and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        prompt, raw, system = GoChatTemplate(request.template).render(messages, add_generation_prompt=True), True, None
    model = loaded.model
    from refllm.chat.turn import plan_turn
    from refllm.generate import check_prompt_text_fits, context_size
    from refllm.sample import Options

    check_prompt_text_fits(model, prompt, context_size(model, Options.from_dict(options)), raw=raw, system=system)  # plan_turn may tokenize
    turn = plan_turn(model, prompt, raw=raw, system=system, rules=request.output)  # format, tools, thinking
    output = model.generate(turn.prompt, raw=turn.raw, stream=True, system=turn.system, images=request.images or None,
                            logprobs=request.logprobs, top_logprobs=request.top_logprobs,
                            session=loaded.session(slot if request.cache_key is None else request.cache_key), options=options, constraint=turn.constraint)
    try:
        for item in output:
            if isinstance(item, str):  # a refllm.generate.Chunk: text plus .logprobs
                piece = turn.split(str(item))  # -> content, thinking, completed tool calls
                yield Piece(piece.content, [_logprob_entry(lp) for lp in item.logprobs], piece.thinking, piece.tool_calls)
            else:  # the GenerationResult, last
                rest = turn.finish()
                if rest:
                    yield Piece(rest.content, [], rest.thinking, rest.tool_calls)
                yield turn.finished(_finished(item, load_ns, started_ns))
                return
    finally:
        output.close()


def _logprob_entry(logprob) -> LogprobEntry:
    """A sampler ``TokenLogprob`` (with text and bytes) in the wire shape both APIs use."""
    top = [{"token": alt.token, "logprob": alt.logprob, "bytes": list(alt.bytes)} for alt in logprob.top_logprobs]
    return LogprobEntry(logprob.token, logprob.logprob, list(logprob.bytes), top)


def _finished(result, load_ns: int, started_ns: int) -> Finished:
    return Finished(
        text=result.text, done_reason=result.done_reason, prompt_tokens=len(result.prompt_tokens),
        prompt_eval_count=result.prompt_eval_count, prompt_eval_duration=result.prompt_eval_duration,
        eval_count=result.eval_count, eval_duration=result.eval_duration,
        load_duration=load_ns + result.load_duration,
        total_duration=time.perf_counter_ns() - started_ns,  # includes waiting in the queue and loading
        logprobs=[_logprob_entry(lp) for lp in (result.logprobs or [])],
    )
