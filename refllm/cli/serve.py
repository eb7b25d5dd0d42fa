"""``refllm serve``: the Ollama- and OpenAI-compatible REST API on 127.0.0.1:11435 by default."""

from __future__ import annotations

import argparse
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="start the REST API (Ollama /api/* and OpenAI /v1/*)",
        description="Serve the Ollama- and OpenAI-compatible REST API. The address comes from --host/--port, else "
                    "REFLLM_HOST (e.g. 127.0.0.1:11435), else refllm.toml ([server] host/port). Also read: "
                    "REFLLM_API_KEY, REFLLM_ORIGINS, REFLLM_KEEP_ALIVE, REFLLM_NUM_PARALLEL, REFLLM_MAX_QUEUE, "
                    "REFLLM_DEVICE (cpu or cuda).",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port to listen on (default 11435)")
    parser.add_argument("--response-store", choices=("none", "memory", "sqlite"), dest="response_store",
                        help="keep stored /v1/responses in memory, or in a SQLite file under the models dir that also keeps "
                             "/v1/sessions over a restart (sessions always live in memory) "
                             "(default: server.response_store_backend, 'none')")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from refllm.config import load_settings
    from refllm.server.run import serve, settings_from_config

    config = load_settings({"server.host": args.host, "server.port": args.port, "server.response_store_backend": args.response_store})
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(*settings_from_config(config))
    return 0
