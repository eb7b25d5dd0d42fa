"""The Modelfile: Ollama's recipe for a model, parsed and written back.

    # comment
    FROM smollm2                      required: a store name, a .gguf path or a safetensors directory
    PARAMETER temperature 0.7         a sampler/runtime option; `stop` may repeat
    PARAMETER stop "<|im_end|>"
    SYSTEM You are a pirate.          the default system prompt
    TEMPLATE \"\"\"{{ .Prompt }}\"\"\"      the prompt template (Go template syntax, as Ollama's)
    MESSAGE user Is Paris in France?  few-shot history (roles: system, user, assistant)
    MESSAGE assistant yes
    LICENSE \"\"\"MIT ...\"\"\"
    REQUIRES 0.1.0                    the oldest refllm that can run this model
    ADAPTER ./lora.gguf               (LoRA adapters: not supported yet)

Instructions are case-insensitive.  A value is the rest of the line, a
``"double quoted"`` string, or a ``\"\"\"triple quoted\"\"\"`` block that may span lines.
Every error names the line it is on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refllm.errors import InvalidRequest

INSTRUCTIONS = ("FROM", "PARAMETER", "SYSTEM", "TEMPLATE", "MESSAGE", "LICENSE", "REQUIRES", "ADAPTER")
MESSAGE_ROLES = ("system", "user", "assistant", "tool")

# Every option a Modelfile PARAMETER (or an API request's "options") may set, with its type.
# Sampler options, then context/runtime options, as in Ollama's API documentation.
PARAMETER_TYPES: dict[str, type] = {
    "num_keep": int, "seed": int, "num_predict": int, "top_k": int, "top_p": float, "min_p": float,
    "typical_p": float, "tfs_z": float, "repeat_last_n": int, "temperature": float,
    "repeat_penalty": float, "presence_penalty": float, "frequency_penalty": float,
    "mirostat": int, "mirostat_tau": float, "mirostat_eta": float, "penalize_newline": bool,
    "stop": list,
    "num_ctx": int, "num_batch": int, "num_gpu": int, "main_gpu": int, "num_thread": int,
    "numa": bool, "low_vram": bool, "vocab_only": bool, "use_mmap": bool, "use_mlock": bool,
}


class ModelfileError(InvalidRequest):
    """A Modelfile that cannot be used; ``line`` is the 1-based line number (0: the whole file)."""

    def __init__(self, line: int, message: str):
        self.line = line
        super().__init__(f"Modelfile line {line}: {message}" if line else f"Modelfile: {message}")


@dataclass
class Modelfile:
    from_: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # "stop" holds a list
    system: str | None = None
    template: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    license: str | None = None
    requires: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)  # FROM paths are relative to the Modelfile


def parse_modelfile(text: str, base_dir: str | Path | None = None) -> Modelfile:
    """Parse Modelfile text; raise ModelfileError naming the line of the first problem."""
    result = Modelfile(base_dir=Path(base_dir) if base_dir is not None else Path.cwd())
    lines = text.splitlines()
    i = 0
    from_line = 0
    while i < len(lines):
        line_number = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, rest = _split_word(line)
        instruction = word.upper()
        if instruction not in INSTRUCTIONS:
            raise ModelfileError(line_number, f"unknown instruction '{word}' (expected one of {', '.join(INSTRUCTIONS)})")
        key = ""
        if instruction in ("PARAMETER", "MESSAGE"):
            key, rest = _split_word(rest)
            if not key:
                what = "a parameter name and a value" if instruction == "PARAMETER" else "a role and a message"
                raise ModelfileError(line_number, f"{instruction} needs {what}")
        value, i = _read_value(rest, lines, i, line_number)
        if value == "" and instruction in ("FROM", "PARAMETER", "REQUIRES", "ADAPTER"):
            raise ModelfileError(line_number, f"{instruction} needs a value")

        if instruction == "FROM":
            if from_line:
                raise ModelfileError(line_number, f"a second FROM (the first is on line {from_line})")
            result.from_, from_line = value, line_number
        elif instruction == "PARAMETER":
            name = key.lower()
            converted = convert_parameter(name, value, line_number)
            if name == "stop":
                result.parameters.setdefault("stop", []).extend(converted)
            else:
                result.parameters[name] = converted
        elif instruction == "MESSAGE":
            role = key.lower()
            if role not in MESSAGE_ROLES:
                raise ModelfileError(line_number, f"MESSAGE role '{key}' is not one of {', '.join(MESSAGE_ROLES)}")
            result.messages.append({"role": role, "content": value})
        elif instruction == "SYSTEM":
            result.system = value
        elif instruction == "TEMPLATE":
            result.template = value
        elif instruction == "LICENSE":
            result.license = value if result.license is None else f"{result.license}\n\n{value}"
        elif instruction == "REQUIRES":
            _check_requires(value, line_number)
            result.requires = value
        elif instruction == "ADAPTER":
            raise ModelfileError(line_number, "ADAPTER (LoRA adapters) is not supported yet by refllm")
    if not from_line:
        raise ModelfileError(0, "no FROM line: say which model to build on (FROM smollm2, FROM ./model.gguf)")
    return result


def convert_parameter(name: str, value: Any, line_number: int = 0) -> Any:
    """Check one option's name and convert its value (text from a Modelfile, or JSON from the API)."""
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise ModelfileError(line_number, f"unknown parameter '{name}'")
    try:
        if kind is list:
            return [value] if isinstance(value, str) else [str(v) for v in value]
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1"):
                return True
            if str(value).lower() in ("false", "0"):
                return False
            raise ValueError
        if isinstance(value, bool):  # JSON true is not a number
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        wanted = {int: "an integer", float: "a number", bool: "true or false"}[kind]
        raise ModelfileError(line_number, f"PARAMETER {name}: {value!r} is not {wanted}") from None


def _split_word(text: str) -> tuple[str, str]:
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def _read_value(rest: str, lines: list[str], i: int, line_number: int) -> tuple[str, int]:
    """The value after an instruction: plain, "quoted" or \"\"\"multi-line\"\"\"; returns (value, next line index)."""
    rest = rest.strip()
    if rest.startswith('"""'):
        body = rest[3:]
        if '"""' in body:  # opened and closed on one line; the last """ closes (a value may end in a quote)
            value, _, after = body.rpartition('"""')
            if after.strip():
                raise ModelfileError(line_number, f"unexpected text after closing \"\"\": {after.strip()!r}")
            return value, i
        collected = [body]
        while i < len(lines):
            line = lines[i]
            i += 1
            if '"""' in line:
                value, _, after = line.rpartition('"""')
                if after.strip():
                    raise ModelfileError(i, f"unexpected text after closing \"\"\": {after.strip()!r}")
                collected.append(value)
                return "\n".join(collected), i
            collected.append(line)
        raise ModelfileError(line_number, 'a """ block is never closed')
    if rest.startswith('"'):
        if len(rest) < 2 or not rest.endswith('"') or rest.endswith('\\"'):
            raise ModelfileError(line_number, "a quoted value is missing its closing quote")
        try:
            return json.loads(rest), i  # a JSON string: handles \" and \n escapes
        except json.JSONDecodeError:
            return rest[1:-1], i
    return rest, i


def _check_requires(version: str, line_number: int) -> None:
    from refllm import __version__

    def as_tuple(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.lstrip("v").split("."))

    try:
        needed, have = as_tuple(version), as_tuple(__version__)
    except ValueError:
        raise ModelfileError(line_number, f"REQUIRES {version!r} is not a version like 0.1.0") from None
    if needed > have:
        raise ModelfileError(line_number, f"this model requires refllm {version} or newer (this is {__version__})")


# --------------------------------------------------------------------------- writing


def format_value(text: str) -> str:
    """A value as a Modelfile writes it: triple-quoted (which keeps newlines and quotes)."""
    return f'"""{text}"""'


def _format_parameter_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # quoted, so spaces and quotes survive a round trip
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_parameters(parameters: dict[str, Any]) -> str:
    """`show --parameters` text: one "name value" line per option (stop values quoted)."""
    lines = []
    for name, value in parameters.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            lines.append(f"{name:<30} {_format_parameter_value(item)}")
    return "\n".join(lines)


def format_modelfile(name: str, from_: str, parameters: dict[str, Any], system: str | None,
                     template: str | None, messages: list[dict], license: str | None) -> str:
    """The Modelfile `refllm show --modelfile` prints: parsing it gives the same model back."""
    out = [
        '# Modelfile generated by "refllm show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {name}",
        "",
        f"FROM {from_}",
    ]
    if template is not None:
        out.append(f"TEMPLATE {format_value(template)}")
    if system is not None:
        out.append(f"SYSTEM {format_value(system)}")
    for pname, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            out.append(f"PARAMETER {pname} {_format_parameter_value(item)}")
    for message in messages:
        out.append(f"MESSAGE {message['role']} {format_value(message['content'])}")
    if license is not None:
        out.append(f"LICENSE {format_value(license)}")
    return "\n".join(out) + "\n"
