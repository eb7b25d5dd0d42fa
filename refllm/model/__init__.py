"""Models: configuration from GGUF metadata and one forward-pass file per architecture family."""
