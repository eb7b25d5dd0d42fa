"""Scheduling between the API and the model: on-demand loading, keep_alive, bounded fair queues."""

from refllm.engine.engine import (
    EmbedResult,
    Engine,
    EngineSettings,
    Finished,
    GenerationRequest,
    GenerationStream,
    LoadedModel,
    ModelRecipe,
    Piece,
    LogprobEntry,
)
from refllm.engine.keep_alive import parse_keep_alive
from refllm.engine.names import validate_model_name
from refllm.engine.queue import ClientGone, RequestQueue, ServerBusy

__all__ = [
    "EmbedResult", "Engine", "EngineSettings", "Finished", "GenerationRequest", "GenerationStream", "LoadedModel",
    "ModelRecipe", "Piece", "LogprobEntry", "parse_keep_alive", "validate_model_name", "RequestQueue", "ServerBusy", "ClientGone",
]
