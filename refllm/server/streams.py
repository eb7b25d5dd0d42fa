"""Streaming framings: NDJSON (Ollama) and server-sent events (OpenAI).

Both take a generator of JSON-able objects; it runs inside the request's context (so it
may use ``flask.current_app``/``request``) even though the view has returned. Closing the response (waitress does so when
the client disconnects) closes that generator, which closes the engine's stream and
stops the generation. An error after the first byte can no longer change the status
code, so it travels in-band, as Ollama does: ``{"error": "..."}`` as the last object.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Iterator

from flask import Response, stream_with_context

from refllm.errors import RefllmError

log = logging.getLogger("refllm.server")


def _in_band_error(e: BaseException) -> str:
    if isinstance(e, RefllmError):
        return str(e)
    log.exception("error while streaming")
    return f"internal error while generating: {type(e).__name__}: {e}"


def ndjson_response(objects: Iterator[dict]) -> Response:
    """One JSON object per line, ``application/x-ndjson``."""

    def lines():
        try:
            for obj in objects:
                yield json.dumps(obj, ensure_ascii=False) + "\n"
        except GeneratorExit:
            raise
        except Exception as e:
            yield json.dumps({"error": _in_band_error(e)}) + "\n"
        finally:
            objects.close()

    return Response(stream_with_context(lines()), mimetype="application/x-ndjson", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse_response(events: Iterator[tuple[str | None, dict]], done_marker: bool = True,
                 error_events: Callable[[str], list[tuple[str | None, dict]]] | None = None) -> Response:
    """``[event: name\\n]data: {json}\\n\\n`` per event, then ``data: [DONE]`` (OpenAI chat/completions).
    An error while streaming becomes the events ``error_events(message)`` gives (default: one ``{"error": {...}}``)."""

    def frame(name: str | None, data: dict) -> str:
        head = f"event: {name}\n" if name else ""
        return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def chunks():
        try:
            for name, data in events:
                yield frame(name, data)
        except GeneratorExit:
            raise
        except Exception as e:
            message = _in_band_error(e)
            default = [(None, {"error": {"message": message, "type": "server_error", "param": None, "code": None}})]
            for name, data in error_events(message) if error_events else default:
                yield frame(name, data)
        finally:
            events.close()
        if done_marker:
            yield "data: [DONE]\n\n"

    return Response(stream_with_context(chunks()), mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
