"""What the listing routes say about a model file: now ``refllm.store.listing`` (the CLI says the same)."""

from refllm.store.listing import details, file_digest, modified_at, rfc3339, tensors  # noqa: F401
