"""``refllm serve``: the Ollama- and OpenAI-compatible REST API on 127.0.0.1:11435 by default."""

from __future__ import annotations

import argparse
import dataclasses
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="start the REST API (Ollama /api/* and OpenAI /v1/*)",
        description="Serve the Ollama- and OpenAI-compatible REST API. Address from --host/--port, else REFLLM_HOST "
                    "(e.g. 127.0.0.1:11435), else the config file. Also read: REFLLM_API_KEY, REFLLM_ORIGINS, "
                    "REFLLM_KEEP_ALIVE, REFLLM_NUM_PARALLEL, REFLLM_MAX_QUEUE, REFLLM_MAX_LOADED_MODELS.",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port to listen on (default 11435)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from refllm.errors import InvalidRequest
    from refllm.server.run import parse_host, serve, settings_from_environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server_settings, engine_settings = settings_from_environment()
    if args.host:
        host, port = parse_host(args.host, server_settings.port)
        server_settings = dataclasses.replace(server_settings, host=host, port=port)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise InvalidRequest(f"--port must be between 0 and 65535, got {args.port}")
        server_settings = dataclasses.replace(server_settings, port=args.port)
    serve(server_settings, engine_settings)
    return 0
