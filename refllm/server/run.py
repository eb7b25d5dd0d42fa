"""Serving the app with waitress (a production WSGI server), in the foreground or in a thread.

    refllm serve                      -> serve(...)            blocks until Ctrl-C
    tests, notebooks                  -> ServerThread(app)     .start() / .url / .stop()
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from waitress.server import create_server

from refllm.engine import Engine, EngineSettings
from refllm.engine.keep_alive import parse_keep_alive
from refllm.errors import RefllmError
from refllm.server.app import ServerSettings, create_app

log = logging.getLogger("refllm.server")


# Waitress reads a whole body before the app sees it; only blob uploads (model files) may be
# this large, every other route is cut at ServerSettings.max_body_bytes (16 MiB) by the app.
MAX_UPLOAD_BYTES = 64 * 1024**3


class ServeError(RefllmError):
    """The server cannot start (address in use, bad address, ...)."""


def settings_from_config(config=None) -> tuple[ServerSettings, EngineSettings]:
    """Server and engine settings from ``refllm.config`` (flags > REFLLM_* env > refllm.toml > defaults)."""
    from refllm.config import load_settings
    from refllm.plan import configured_backend

    config = config or load_settings()
    server = config.server
    return (
        ServerSettings(host=server.host, port=server.port, api_key=server.api_key or None, origins=list(server.origins),
                       response_store_backend=server.response_store_backend, models_dir=str(config.runtime.models_dir)),
        EngineSettings(keep_alive_s=parse_keep_alive(server.keep_alive), num_parallel=server.num_parallel,
                       max_queue=server.max_queue, backend=configured_backend(config.runtime.device),
                       max_loaded_models=getattr(server, "max_loaded_models", EngineSettings.max_loaded_models)),
    )


def worker_threads(engine_settings: EngineSettings, limit: int = 128) -> int:
    """Waitress threads: one per running or queued request (a queued request waits in a thread).

    Past ``limit`` threads, further requests wait in waitress's own backlog instead of
    getting the queue's 503: set REFLLM_MAX_QUEUE below that for a strict bound.
    """
    running = engine_settings.num_parallel * engine_settings.max_loaded_models
    return max(16, min(limit, running + engine_settings.max_queue + 8))


def make_server(app, host: str, port: int, threads: int = 16):
    """A waitress server bound to host:port (port 0 picks a free one)."""
    return create_server(app, host=host, port=port, threads=threads, ident="refllm", channel_timeout=300,
                         connection_limit=200, clear_untrusted_proxy_headers=True,
                         max_request_body_size=MAX_UPLOAD_BYTES,
                         channel_request_lookahead=1)  # keep reading: a client that hangs up is noticed


def serve(server_settings: ServerSettings, engine_settings: EngineSettings) -> None:
    """Run the API in the foreground until interrupted."""
    if engine_settings.backend is not None:
        from refllm.kernels.reference import get_backend

        try:
            get_backend(engine_settings.backend)  # runtime.device = "cuda" on a machine without one
        except RefllmError as e:
            raise ServeError(f"cannot serve on runtime.device's backend: {e}") from None
    from refllm.plan import apply_thread_setting

    apply_thread_setting()  # runtime.num_threads, for every model this server loads
    engine = Engine(engine_settings)
    app = create_app(engine, server_settings)
    try:
        server = make_server(app, server_settings.host, server_settings.port, worker_threads(engine_settings))
    except (OSError, ValueError) as e:  # ValueError: waitress cannot resolve the host
        engine.close()
        raise ServeError(f"cannot listen on {server_settings.host}:{server_settings.port}: {getattr(e, 'strerror', None) or e}") from None
    if server_settings.host not in ("127.0.0.1", "localhost", "::1") and not server_settings.api_key:
        log.warning("listening on %s without REFLLM_API_KEY: anyone who can reach this address can use the API", server_settings.host)
    print(f"refllm serving on http://{server_settings.host}:{server.effective_port} (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    finally:
        server.close()
        engine.close()


@dataclass
class ServerThread:
    """The app served by waitress on a background thread: ``with ServerThread(app) as url: ...``."""

    app: object
    host: str = "127.0.0.1"
    port: int = 0
    threads: int = 16

    def start(self) -> str:
        self._server = make_server(self.app, self.host, self.port, self.threads)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="refllm-server", daemon=True)
        self._thread.start()
        return self.url

    def _run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):
            if not self._stopping:  # closing the sockets under a running select() is how we stop
                raise

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.effective_port}"

    def stop(self) -> None:
        from waitress import wasyncore

        self._stopping = True
        self._server.task_dispatcher.shutdown(timeout=2)
        wasyncore.close_all(self._server._map)  # the listening socket and any kept-alive client connection
        self._thread.join(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
