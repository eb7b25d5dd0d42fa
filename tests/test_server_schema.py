"""Property-based fuzzing of the live API from its own /openapi.json (schemathesis): no request,
however odd, gets a 5xx. Bounded: a few examples per operation, fake models only."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from refllm.engine import EngineSettings
from refllm.server import ServerThread, create_app
from server_fakes import fake_engine


@pytest.fixture(scope="module")
def live_url(smollm2_gguf, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFLLM_MODELS", str(tmp_path_factory.mktemp("models")))
        engine, _ = fake_engine(smollm2_gguf, EngineSettings(num_parallel=2, max_queue=64), every_name_is_fake=True)
        with ServerThread(create_app(engine)) as url:
            yield url
        engine.close()


@pytest.fixture(scope="module")
def api_schema(live_url):
    return schemathesis.openapi.from_url(live_url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.exclude(path_regex="^/api/(pull|create|push)$").parametrize()  # push: always 501 (no registry)
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case, live_url):
    if case.body is not None and isinstance(case.body, dict) and isinstance(case.body.get("options"), dict):
        case.body["options"]["num_predict"] = 8  # keep generations short whatever else was drawn
    response = case.call(base_url=live_url, timeout=60)
    # no 5xx, the documented content type, and JSON bodies that match the documented schema
    case.validate_response(response, checks=[not_a_server_error, content_type_conformance, response_schema_conformance])
    content_type = response.headers.get("content-type") or [""]
    if response.status_code >= 400 and case.method != "HEAD" and content_type[0].startswith("application/json"):
        assert "error" in response.json()
