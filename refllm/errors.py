"""Errors that cross module boundaries and reach users (CLI exit codes, HTTP statuses)."""


class RefllmError(Exception):
    """Base class of refllm's user-facing errors. ``str(e)`` is a one-line message."""

    exit_code = 1
    http_status = 400


class ModelNotFound(RefllmError):
    exit_code = 1
    http_status = 404


class UnsupportedModel(RefllmError):
    """An architecture, tensor type or metadata key this runtime does not handle."""

    http_status = 400


class InvalidRequest(RefllmError):
    """Bad options, bad input text, a prompt longer than the context, ..."""

    http_status = 400
