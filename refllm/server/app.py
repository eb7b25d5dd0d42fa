"""The Flask application: routes of both APIs plus the safety layer around them.

    request ─► CORS check ─► bearer token ─► body size limit ─► route (a thin codec) ─► engine
                                                           errors ─► {"error": ...} JSON, never a traceback

``create_app(engine, settings)`` builds it; ``refllm.server.run`` serves it with waitress.
"""

from __future__ import annotations

import fnmatch
import hmac
import logging
import re
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from refllm import __version__
from refllm.config import DEFAULT_HOST, DEFAULT_PORT
from refllm.engine import Engine
from refllm.errors import RefllmError
from refllm.gguf import GGUFError

log = logging.getLogger("refllm.server")

MAX_BODY_BYTES = 16 * 1024 * 1024  # every route except blob upload
# Browser origins allowed by default: pages served from this machine (as Ollama does).
DEFAULT_ORIGINS = (
    "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://[::1]", "http://[::1]:*",
)
HEALTH_PATHS = ("/",)  # answered without the API key: a load balancer or a client can check the server is up


@dataclass
class ServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None  # REFLLM_API_KEY: required as "Authorization: Bearer <key>" when set
    origins: list[str] = field(default_factory=list)  # REFLLM_ORIGINS: extra allowed browser origins
    max_body_bytes: int = MAX_BODY_BYTES
    response_store_backend: str = "none"  # stored Responses and sessions: "none", "memory" or "sqlite"
    models_dir: str | None = None  # where the sqlite state file lives (default: the configured runtime.models_dir)


def _origin_allowed(origin: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(origin, p) for p in patterns)


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


_FIELD_NAMED = re.compile(r"field '([^']+)'")  # "field 'temperature' must be ...", "field 'response_format.schema': ..."
_PATH_FIRST = re.compile(r"(\w+(?:\[\d+\])(?:\.\w+|\[\d+\])*) ")  # "messages[0].content is required"


def error_param(message: str) -> str | None:
    """The request field an error message starts by naming (OpenAI's ``param``), or None."""
    match = _FIELD_NAMED.match(message) or _PATH_FIRST.match(message)
    return match.group(1) if match else None


def error_response(message: str, status: int) -> Response:
    """``{"error": "..."}`` for Ollama routes; OpenAI's ``{"error": {"message", "type", ...}}`` under /v1/."""
    if is_openai_path(request.path):
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status == 404:
            kind = "not_found_error"
        body = {"error": {"message": message, "type": kind, "param": error_param(message), "code": None}}
    else:
        body = {"error": message}
    response = jsonify(body)
    response.status_code = status
    return response


def create_app(engine: Engine, settings: ServerSettings | None = None) -> Flask:
    settings = settings or ServerSettings()
    app = Flask("refllm.server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    app.extensions["refllm.engine"] = engine
    app.extensions["refllm.settings"] = settings
    allowed_origins = list(DEFAULT_ORIGINS) + list(settings.origins)

    @app.before_request
    def guard():
        origin = request.headers.get("Origin")
        if origin and not _origin_allowed(origin, allowed_origins):
            return error_response(f"origin {origin!r} is not allowed (add it to REFLLM_ORIGINS)", 403)
        if request.method == "OPTIONS":  # CORS preflight: answered here, no token needed
            return Response(status=204)
        if settings.api_key and request.path not in HEALTH_PATHS:
            header = request.headers.get("Authorization", "")
            token = header[7:] if header.startswith("Bearer ") else ""
            if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                response = error_response("missing or wrong API key (send 'Authorization: Bearer <REFLLM_API_KEY>')", 401)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        if request.path.startswith("/api/blobs/"):
            request.max_content_length = None  # model files are large; the store checks their digest
        return None

    @app.after_request
    def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and _origin_allowed(origin, allowed_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, HEAD, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Async"
            response.headers.add("Vary", "Origin")
        return response

    @app.errorhandler(RefllmError)
    def refllm_error(e: RefllmError):
        return error_response(str(e), e.http_status)

    @app.errorhandler(GGUFError)
    def gguf_error(e: GGUFError):
        return error_response(f"cannot read the model file: {e}", 500)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = {404: f"no route {request.method} {request.path}", 405: f"method {request.method} not allowed on {request.path}",
                    413: f"request body too large (limit {settings.max_body_bytes} bytes)"}
        return error_response(messages.get(e.code, e.description or e.name), e.code or 500)

    @app.errorhandler(Exception)
    def unexpected_error(e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(f"internal error: {type(e).__name__}: {e}", 500)

    @app.route("/", methods=["GET", "HEAD"])
    def health():
        return Response("refllm is running", mimetype="text/plain")

    @app.get("/api/version")
    def version():
        return jsonify({"version": __version__})

    from refllm.server.ollama_api import ollama_api
    from refllm.server.openai_api import openai_api
    from refllm.server.openapi import openapi_spec

    app.register_blueprint(ollama_api)
    app.register_blueprint(openai_api)
    from refllm.server.ollm_routes import install_state, ollm_routes

    app.register_blueprint(ollm_routes)  # native /v1/health, /v1/prompt, /v1/sessions, ...; stored Responses
    install_state(app, settings.response_store_backend, settings.models_dir)

    @app.get("/openapi.json")
    def openapi():
        return jsonify(openapi_spec())

    return app
