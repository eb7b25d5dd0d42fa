"""refllm's settings: one object, four layers, every value traceable to its source.

Where a value comes from, highest priority first (the oLLM seed's contract):

    1. CLI flags                 load_settings({"server.port": 8080})
    2. REFLLM_* environment      REFLLM_SERVER__PORT=8080  (section__field)
                                 plus the Ollama-style short names below
    3. a TOML file               ./refllm.toml, or the file named by REFLLM_CONFIG_FILE
    4. built-in defaults         the dataclass defaults in this module

    settings = load_settings()
    settings.server.port                  # 11435
    settings.sources["server.port"]       # "default", "env:REFLLM_HOST", "file:/x/refllm.toml", "cli"
    settings.to_dict(with_sources=True)   # what `refllm doctor --json` prints

Every value is checked when it is loaded; a bad one raises ``ConfigError`` naming
the key, the bad value and where it came from.  This module is the single source
of truth for defaults other parts share (the server's port, the models directory).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from refllm.errors import RefllmError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435  # Ollama uses 11434; refllm sits next to it, so both can run
ENV_PREFIX = "REFLLM_"
CONFIG_FILE_ENV = "REFLLM_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "refllm.toml"  # looked up in the current directory


class ConfigError(RefllmError):
    """A setting with a wrong name, type or range (the message names key and source)."""


# --------------------------------------------------------------------------- the schema


@dataclass
class RuntimeSettings:
    models_dir: Path = field(default_factory=lambda: Path.home() / ".refllm" / "models")
    model_reference: str = "smollm2"  # what `refllm run` uses when no model is named
    device: str = "cpu"  # "cpu" or "cuda"
    num_threads: int = 0  # 0: let Numba choose (all cores)


@dataclass
class GenerationSettings:
    max_new_tokens: int = -1  # Ollama's num_predict: -1 means until end-of-sequence or num_ctx
    num_ctx: int = 2048
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int = -1  # -1: a fresh random seed per request
    stream: bool = True


@dataclass
class ServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    keep_alive: str = "5m"  # Ollama duration: "5m", "1h", "30s", "0" (unload at once), "-1" (forever)
    num_parallel: int = 1  # requests served at the same time per model
    max_queue: int = 512  # requests waiting before the server answers 503
    api_key: str = ""  # when set, requests must carry "Authorization: Bearer <key>"
    origins: list[str] = field(default_factory=list)  # extra CORS origins besides localhost
    log_level: str = "info"
    response_store_backend: str = "none"  # stored Responses and sessions: "none", "memory" or "sqlite" (a file under models_dir)


@dataclass
class Settings:
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    # "section.field" -> where its value came from; filled by load_settings()
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self, with_sources: bool = False) -> dict[str, Any]:
        """Plain JSON-ready values; with ``with_sources``, each as {"value": ..., "source": ...}."""
        result: dict[str, Any] = {}
        for section_name in SECTIONS:
            section = getattr(self, section_name)
            values = {}
            for f in dataclasses.fields(section):
                value = _jsonable(getattr(section, f.name))
                key = f"{section_name}.{f.name}"
                values[f.name] = {"value": value, "source": self.sources.get(key, "default")} if with_sources else value
            result[section_name] = values
        return result

    @property
    def server_url(self) -> str:
        """Where a client reaches the server: a wildcard bind address is reached on loopback."""
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}"


SECTIONS: dict[str, type] = {"runtime": RuntimeSettings, "generation": GenerationSettings, "server": ServerSettings}

# Ollama-style short environment names -> the setting they fill.
# REFLLM_HOST is special: "host", "host:port", ":port" or "http://host:port" (like OLLAMA_HOST).
SHORT_ENV_NAMES: dict[str, str] = {
    "REFLLM_MODELS": "runtime.models_dir",
    "REFLLM_DEVICE": "runtime.device",
    "REFLLM_KEEP_ALIVE": "server.keep_alive",
    "REFLLM_NUM_PARALLEL": "server.num_parallel",
    "REFLLM_MAX_QUEUE": "server.max_queue",
    "REFLLM_API_KEY": "server.api_key",
    "REFLLM_ORIGINS": "server.origins",
}

# Range checks: key -> (test, what the value must be).
_CHECKS: dict[str, tuple[Any, str]] = {
    "runtime.device": (lambda v: v in ("cpu", "cuda"), 'one of "cpu", "cuda"'),
    "runtime.num_threads": (lambda v: v >= 0, ">= 0"),
    "generation.max_new_tokens": (lambda v: v >= -2, ">= -2 (-1: no limit, -2: fill the context)"),
    "generation.num_ctx": (lambda v: v >= 1, ">= 1"),
    "generation.temperature": (lambda v: v >= 0, ">= 0"),
    "generation.top_k": (lambda v: v >= 0, ">= 0"),
    "generation.top_p": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "generation.min_p": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "generation.repeat_penalty": (lambda v: v >= 0, ">= 0"),
    "generation.repeat_last_n": (lambda v: v >= -1, ">= -1"),
    "server.port": (lambda v: 1 <= v <= 65535, "a port number between 1 and 65535"),
    "server.keep_alive": (lambda v: _valid_duration(v), 'a duration like "5m", "30s", "1h", "0" or "-1"'),
    "server.num_parallel": (lambda v: v >= 1, ">= 1"),
    "server.max_queue": (lambda v: v >= 1, ">= 1"),
    "server.log_level": (lambda v: v in ("debug", "info", "warning", "error"), 'one of "debug", "info", "warning", "error"'),
    "server.response_store_backend": (lambda v: v in ("none", "memory", "sqlite"), 'one of "none", "memory", "sqlite"'),
}


# --------------------------------------------------------------------------- loading


def load_settings(
    cli_overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> Settings:
    """Resolve every setting through the four layers; raise ConfigError on the first bad one.

    ``cli_overrides``: {"server.port": 8080} or {"server": {"port": 8080}}; None values are skipped
    (an argparse flag the user did not give).  ``environ`` defaults to ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    settings = Settings()
    # Lowest layer first; each later layer overwrites and records its source.
    file_path = _config_file_path(config_file, environ)
    if file_path is not None:
        for key, value in _read_toml(file_path).items():
            _set(settings, key, value, f"file:{file_path}")
            section, _, name = key.partition(".")
            loaded = getattr(getattr(settings, section), name)
            if isinstance(loaded, Path) and not loaded.is_absolute():  # relative to the file, not the cwd
                setattr(getattr(settings, section), name, file_path.parent / loaded)
    for key, (value, source) in _from_environment(environ).items():
        _set(settings, key, value, source)
    for key, value in _flatten(cli_overrides or {}, "cli").items():
        if value is not None:
            _set(settings, key, value, "cli")
    return settings


def _config_file_path(explicit: str | os.PathLike | None, environ: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        path, named_by = Path(explicit), "the --config option"
    elif environ.get(CONFIG_FILE_ENV):
        path, named_by = Path(environ[CONFIG_FILE_ENV]), CONFIG_FILE_ENV
    else:
        default = Path.cwd() / DEFAULT_CONFIG_FILE
        return default if default.is_file() else None
    if not path.is_file():
        raise ConfigError(f"config file {path} (named by {named_by}) does not exist")
    return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    return _flatten(document, f"file:{path}")


def _flatten(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
    """{"server": {"port": 1}} or {"server.port": 1} -> {"server.port": 1}, names checked."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if "." in name:
            flat[name] = value
        elif name in SECTIONS and isinstance(value, Mapping):
            for field_name, field_value in value.items():
                flat[f"{name}.{field_name}"] = field_value
        else:
            raise ConfigError(f"unknown setting '{name}' (from {source}); sections are: {', '.join(SECTIONS)}")
    for key in flat:
        _check_known(key, source)
    return flat


def _from_environment(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """REFLLM_SECTION__FIELD and the short names -> {"section.field": (text, "env:NAME")}."""
    found: dict[str, tuple[str, str]] = {}
    # Short names first, so that an explicit nested variable wins over its short form.
    host = environ.get("REFLLM_HOST")
    if host:
        host_name, port = _split_host(host)
        if host_name:
            found["server.host"] = (host_name, "env:REFLLM_HOST")
        if port is not None:
            found["server.port"] = (port, "env:REFLLM_HOST")
    for env_name, key in SHORT_ENV_NAMES.items():
        if environ.get(env_name, "") != "":
            found[key] = (environ[env_name], f"env:{env_name}")
    for env_name, text in environ.items():
        if not env_name.startswith(ENV_PREFIX) or "__" not in env_name:
            continue
        section, _, field_name = env_name[len(ENV_PREFIX):].lower().partition("__")
        if section not in SECTIONS:
            continue  # not a settings variable (another tool's REFLLM_* name)
        key = f"{section}.{field_name}"
        _check_known(key, f"env:{env_name}")
        found[key] = (text, f"env:{env_name}")
    return found


def _split_host(text: str) -> tuple[str, str | None]:
    """OLLAMA_HOST-style: "1.2.3.4", "1.2.3.4:80", ":80", "http://h:80", "[::1]:80" -> (host, port)."""
    text = text.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port
    return text, None


def _check_known(key: str, source: str) -> None:
    section, _, field_name = key.partition(".")
    if section not in SECTIONS:
        raise ConfigError(f"unknown setting '{key}' (from {source}); sections are: {', '.join(SECTIONS)}")
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if field_name not in names:
        raise ConfigError(f"unknown setting '{key}' (from {source}); [{section}] has: {', '.join(names)}")


def _set(settings: Settings, key: str, value: Any, source: str) -> None:
    """Convert ``value`` to the field's type, range-check it, store it and its source."""
    section_name, _, field_name = key.partition(".")
    section = getattr(settings, section_name)
    default = getattr(section, field_name)
    try:
        converted = _convert(value, default)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid value {value!r} for setting '{key}' (from {source}): {e}") from None
    check = _CHECKS.get(key)
    if check is not None and not check[0](converted):
        raise ConfigError(f"invalid value {value!r} for setting '{key}' (from {source}): must be {check[1]}")
    setattr(section, field_name, converted)
    settings.sources[key] = source


def _convert(value: Any, like: Any) -> Any:
    """Bring a TOML value or environment text to the type of the default ``like``."""
    if isinstance(like, bool):  # before int: bool is an int subclass
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(like, int):
        if isinstance(value, bool) or (not isinstance(value, int) and not isinstance(value, str)):
            raise ValueError("expected an integer")
        try:
            return int(value)
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(like, float):
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
    if isinstance(like, Path):
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise ValueError("expected a path")
        return Path(value).expanduser()
    if isinstance(like, list):
        if isinstance(value, str):  # environment: comma-separated
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise ValueError("expected a list of strings")
    if isinstance(like, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # keep_alive = 0 in TOML
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    raise TypeError(f"unsupported setting type {type(like).__name__}")


def _valid_duration(text: str) -> bool:
    from refllm.engine.keep_alive import parse_keep_alive  # the one parser of Ollama's durations

    try:
        parse_keep_alive(text)
    except RefllmError:
        return False
    return True


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
