"""refllm.config: CLI > REFLLM_* environment > TOML file > defaults, with sources and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refllm.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "refllm.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./refllm.toml here
    settings = load_settings(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 11435
    assert settings.runtime.models_dir == Path.home() / ".refllm" / "models"
    assert settings.sources == {}  # every value is a default
    assert settings.to_dict(with_sources=True)["server"]["port"] == {"value": 11435, "source": "default"}


def test_each_layer_overrides_the_one_below(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_toml(tmp_path, '[server]\nport = 9001\nhost = "0.0.0.0"\n[generation]\ntemperature = 0.1\n')
    environ = {"REFLLM_SERVER__PORT": "9002", "REFLLM_GENERATION__TOP_K": "7"}
    settings = load_settings({"server.port": 9003, "generation.top_p": None}, environ=environ)
    assert settings.server.port == 9003 and settings.sources["server.port"] == "cli"
    assert settings.generation.top_k == 7 and settings.sources["generation.top_k"] == "env:REFLLM_GENERATION__TOP_K"
    assert settings.server.host == "0.0.0.0" and settings.sources["server.host"] == f"file:{tmp_path / 'refllm.toml'}"
    assert settings.generation.temperature == 0.1
    assert settings.generation.top_p == 0.9 and "generation.top_p" not in settings.sources  # None: flag not given
    # without the CLI value the environment wins over the file
    assert load_settings(environ=environ).server.port == 9002


def test_nested_cli_overrides_and_config_file_env(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text("[runtime]\nmodels_dir = '~/m'\n")
    settings = load_settings({"server": {"port": 1234}}, environ={"REFLLM_CONFIG_FILE": str(path)})
    assert settings.server.port == 1234
    assert settings.runtime.models_dir == Path.home() / "m"
    assert settings.sources["runtime.models_dir"] == f"file:{path}"


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "refllm.toml"
    path.write_text("[runtime]\nmodels_dir = 'models'\n")
    settings = load_settings(environ={"REFLLM_CONFIG_FILE": str(path)})
    assert settings.runtime.models_dir == tmp_path / "conf" / "models"
    assert load_settings(environ={"REFLLM_MODELS": "rel"}).runtime.models_dir == Path("rel")  # env: as given


def test_short_environment_names():
    environ = {
        "REFLLM_HOST": "0.0.0.0:8080", "REFLLM_MODELS": "/srv/models", "REFLLM_KEEP_ALIVE": "1h",
        "REFLLM_NUM_PARALLEL": "4", "REFLLM_MAX_QUEUE": "9", "REFLLM_API_KEY": "k", "REFLLM_ORIGINS": "http://a, http://b",
    }
    settings = load_settings(environ=environ)
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8080)
    assert settings.sources["server.port"] == "env:REFLLM_HOST"
    assert settings.runtime.models_dir == Path("/srv/models")
    assert settings.server.keep_alive == "1h" and settings.server.num_parallel == 4 and settings.server.max_queue == 9
    assert settings.server.api_key == "k" and settings.server.origins == ["http://a", "http://b"]
    assert settings.server_url == "http://127.0.0.1:8080"  # a wildcard bind is reached on loopback
    # the explicit nested name wins over the short one
    assert load_settings(environ={**environ, "REFLLM_SERVER__NUM_PARALLEL": "2"}).server.num_parallel == 2


@pytest.mark.parametrize("text, host, port", [
    ("example.org", "example.org", 11435), (":9999", "127.0.0.1", 9999),
    ("http://10.0.0.1:81/", "10.0.0.1", 81), ("[::1]:82", "::1", 82),
])
def test_refllm_host_forms(text, host, port):
    settings = load_settings(environ={"REFLLM_HOST": text})
    assert (settings.server.host, settings.server.port) == (host, port)


@pytest.mark.parametrize("environ, file_text, words", [
    ({"REFLLM_SERVER__PORT": "http"}, None, ["server.port", "REFLLM_SERVER__PORT", "integer"]),
    ({"REFLLM_SERVER__PORT": "70000"}, None, ["server.port", "REFLLM_SERVER__PORT", "65535"]),
    ({"REFLLM_SERVER__PROT": "1"}, None, ["server.prot", "REFLLM_SERVER__PROT", "port"]),
    ({"REFLLM_KEEP_ALIVE": "soon"}, None, ["server.keep_alive", "REFLLM_KEEP_ALIVE"]),
    ({"REFLLM_GENERATION__STREAM": "maybe"}, None, ["generation.stream", "true or false"]),
    ({}, "[server]\nport = '8080'\nnum_parallel = 0\n", ["server.num_parallel", "refllm.toml", ">= 1"]),
    ({}, "[sever]\nport = 1\n", ["sever", "refllm.toml"]),
    ({}, "[generation]\ntemperature = true\n", ["generation.temperature", "number"]),
    ({}, "[server\n", ["not valid TOML"]),
])
def test_bad_values_name_key_and_source(tmp_path, monkeypatch, environ, file_text, words):
    monkeypatch.chdir(tmp_path)
    if file_text is not None:
        write_toml(tmp_path, file_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    for word in words:
        assert word in str(caught.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="REFLLM_CONFIG_FILE"):
        load_settings(environ={"REFLLM_CONFIG_FILE": str(tmp_path / "nope.toml")})


def test_other_refllm_variables_are_ignored():
    settings = load_settings(environ={"REFLLM_DEBUG": "1", "REFLLM_SOMETHING__ELSE": "x"})
    assert settings == Settings(sources=settings.sources)


def test_example_file_loads_and_matches_the_defaults():
    """The example refllm.example.toml in the repo is valid and documents the real defaults."""
    example = load_settings(environ={"REFLLM_CONFIG_FILE": str(REPO / "refllm.example.toml")})
    defaults = Settings()
    assert example.to_dict() == defaults.to_dict()
    assert set(example.sources) == {f"{s}.{f}" for s, fields in defaults.to_dict().items() for f in fields}


def test_to_dict_is_json_with_sources():
    settings = load_settings({"server.port": 1}, environ={})
    data = json.loads(json.dumps(settings.to_dict(with_sources=True)))
    assert data["server"]["port"] == {"value": 1, "source": "cli"}
    assert isinstance(data["runtime"]["models_dir"]["value"], str)


# --------------------------------------------------------------------------- runtime.device


def test_runtime_device_picks_the_default_backend_of_plan_run_and_server(tmp_path, monkeypatch, tiny_model):
    """runtime.device = "cuda" (here REFLLM_DEVICE) makes cuda the default backend everywhere
    a model is loaded without an explicit --backend (the CUDA simulator stands in for a GPU)."""
    from refllm.plan import build_plan, configured_backend
    from refllm.server.run import settings_from_config

    monkeypatch.chdir(tmp_path)
    assert configured_backend("cpu") == "numba" and configured_backend("cuda") == "cuda"
    path = tiny_model("llama", "F16")
    monkeypatch.delenv("REFLLM_DEVICE", raising=False)
    assert build_plan(path).backend == "numba"
    monkeypatch.setenv("REFLLM_DEVICE", "cuda")
    assert build_plan(path).backend == "cuda"
    assert build_plan(path, backend="numpy").backend == "numpy"  # an explicit backend still wins
    _, engine_settings = settings_from_config()
    assert engine_settings.backend == "cuda"

    from refllm.cli.run import _load

    assert _load(str(path), None).backend == "cuda"
    assert _load(str(path), "numpy").backend == "numpy"


def test_engine_runs_every_model_on_its_configured_backend(tiny_model):
    from refllm.engine.engine import Engine, EngineSettings, GenerationRequest, ModelRecipe

    path = tiny_model("llama", "F16")
    engine = Engine(EngineSettings(backend="numpy"), resolver=lambda name: ModelRecipe(name=name, gguf_path=path))
    try:
        finished = engine.generate(GenerationRequest("tiny", "hello", raw=True, options={"num_predict": 2, "temperature": 0})).collect()
        assert finished.eval_count >= 1
        assert [loaded.model.backend for loaded in engine.running()] == ["numpy"]
    finally:
        engine.close()


def test_serve_refuses_a_device_it_cannot_use(monkeypatch):
    import refllm.kernels.cuda as cuda_package
    from refllm.engine.engine import EngineSettings
    from refllm.server.run import ServeError, ServerSettings, serve

    monkeypatch.setattr(cuda_package, "cuda_status", lambda: (False, "no NVIDIA driver found"))
    with pytest.raises(ServeError, match="no NVIDIA driver found"):
        serve(ServerSettings(host="127.0.0.1", port=0), EngineSettings(backend="cuda"))


def test_unknown_device_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="runtime.device"):
        load_settings(environ={"REFLLM_DEVICE": "gpu"})


def test_runtime_num_threads_sets_the_kernel_threads(tmp_path, monkeypatch, tiny_model):
    import numba

    from refllm.cli.run import _load
    from refllm.kernels import numba_backend
    from refllm.plan import build_plan

    monkeypatch.chdir(tmp_path)
    path = tiny_model("llama", "Q8_0")
    monkeypatch.setenv("REFLLM_RUNTIME__NUM_THREADS", "1")
    try:
        assert build_plan(path).threads == 1
        _load(str(path), "numba")
        assert numba_backend.set_threads(None) == 1
        monkeypatch.setenv("REFLLM_RUNTIME__NUM_THREADS", "0")  # 0: every core Numba has
        assert build_plan(path).threads == numba.config.NUMBA_NUM_THREADS
    finally:
        numba_backend.set_threads(numba.config.NUMBA_NUM_THREADS)
