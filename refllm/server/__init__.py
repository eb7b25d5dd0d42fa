"""The REST API: Ollama's ``/api/*`` and OpenAI's ``/v1/*`` on one engine (Flask app, served by waitress)."""

from refllm.server.app import ServerSettings, create_app
from refllm.server.run import ServerThread, serve, settings_from_config

__all__ = ["ServerSettings", "ServerThread", "create_app", "serve", "settings_from_config"]
