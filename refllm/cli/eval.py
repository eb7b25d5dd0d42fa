"""``refllm eval``: placeholder, filled in below."""


def register(subparsers) -> None:
    pass
