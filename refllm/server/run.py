"""Serving the app with waitress (a production WSGI server), in the foreground or in a thread.

    refllm serve                      -> serve(...)            blocks until Ctrl-C
    tests, notebooks                  -> ServerThread(app)     .start() / .url / .stop()
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from waitress.server import create_server

from refllm.engine import Engine, EngineSettings
from refllm.engine.keep_alive import parse_keep_alive
from refllm.errors import InvalidRequest, RefllmError
from refllm.server.app import DEFAULT_HOST, DEFAULT_PORT, ServerSettings, create_app

log = logging.getLogger("refllm.server")


class ServeError(RefllmError):
    """The server cannot start (address in use, bad address, ...)."""


def parse_host(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``REFLLM_HOST``-style address: ``host``, ``host:port``, ``:port``, ``[::1]:port``, with or without ``http://``."""
    text = value.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
    host, port = text, default_port
    if text.startswith("["):  # IPv6 literal
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], value)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, value)
    return host or DEFAULT_HOST, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise InvalidRequest(f"invalid port in address {whole!r}")
    return int(text)


def _env_int(name: str, default: int, low: int = 0) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    if not text.strip().isdigit() or int(text) < low:
        raise InvalidRequest(f"{name} must be an integer >= {low}, got {text!r}")
    return int(text)


def settings_from_environment() -> tuple[ServerSettings, EngineSettings]:
    """Server and engine settings from the REFLLM_* variables (and, when present, refllm.config)."""
    values: dict = {}
    try:
        from refllm.config import load_settings  # the store issue's config file + environment
    except ImportError:
        load_settings = None
    if load_settings is not None:
        values = {k: v for k, v in vars(load_settings()).items() if v is not None}
    host, port = parse_host(os.environ.get("REFLLM_HOST") or f"{values.get('host', DEFAULT_HOST)}:{values.get('port', DEFAULT_PORT)}")
    origins = os.environ.get("REFLLM_ORIGINS")
    origins_list = [o.strip() for o in origins.split(",") if o.strip()] if origins else list(values.get("origins", []) or [])
    server = ServerSettings(host=host, port=port, api_key=os.environ.get("REFLLM_API_KEY") or values.get("api_key"), origins=origins_list)
    engine = EngineSettings(
        keep_alive_s=parse_keep_alive(os.environ.get("REFLLM_KEEP_ALIVE") or values.get("keep_alive")),
        num_parallel=_env_int("REFLLM_NUM_PARALLEL", int(values.get("num_parallel", 1)), low=1),
        max_queue=_env_int("REFLLM_MAX_QUEUE", int(values.get("max_queue", 512))),
        max_loaded_models=_env_int("REFLLM_MAX_LOADED_MODELS", int(values.get("max_loaded_models", 3)), low=1),
    )
    return server, engine


def make_server(app, host: str, port: int, threads: int = 16):
    """A waitress server bound to host:port (port 0 picks a free one)."""
    return create_server(app, host=host, port=port, threads=threads, ident="refllm", channel_timeout=300,
                         connection_limit=200, clear_untrusted_proxy_headers=True)


def serve(server_settings: ServerSettings, engine_settings: EngineSettings) -> None:
    """Run the API in the foreground until interrupted."""
    engine = Engine(engine_settings)
    app = create_app(engine, server_settings)
    try:
        server = make_server(app, server_settings.host, server_settings.port, server_settings.threads)
    except OSError as e:
        engine.close()
        raise ServeError(f"cannot listen on {server_settings.host}:{server_settings.port}: {e.strerror or e}") from None
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
        self._stopping = True
        self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
