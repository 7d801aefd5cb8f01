"""The OpenAPI document is the contract: schemathesis' coverage and fuzzing phases, every check, 0 failures.

It runs against the real gateway app (`create_app`: its routes, validation, auth, error mapping, feedback store and
registry on disk) with the fake engine of tests/fake_engine.py in place of vLLM, so a run takes seconds instead of
minutes of generation on 2 cores. That engine takes vLLM's own parsed request and runs vLLM's sampling-parameter
checks; what the real engine does with the same bodies is covered by tests/integration/test_openai_surface.py and
test_serving.py. Its context limit is lifted: the token count of a prompt is not something a JSON Schema can bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.python import asgi

from flywheel.settings import Settings
from server.app import create_app
from tests.fake_engine import FakeEngine
from tests.lora_factory import write_tiny_base

# Statuses a schema-valid body may still get because it depends on stored state that no schema can describe:
# an uploaded adapter's files must be a real PEFT adapter of this base; a rating's choice_index must exist in that
# completion; a pair's two answers must differ and answer one prompt.
STATE_DEPENDENT = ["POST /admin/adapters/{name}/versions", "POST /v1/feedback", "POST /v1/feedback/pairs"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' own default, 5xx still fails


def contract_config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 11,  # reproducible: the same cases each run
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True}, "stateful": {"enabled": False},
                   "fuzzing": {"enabled": True}},
        "generation": {"max-examples": 25, "database": "none"},
        "operations": [{"include-name": name,
                        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}}}
                       for name in STATE_DEPENDENT],
    })


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("contract")
    settings = Settings(data_dir=tmp / "data", model_path=write_tiny_base(tmp / "base"), registry_poll_seconds=0.05,
                        max_lora_rank=8, train_lora_rank=8)
    engine = FakeEngine()
    engine.max_model_len = 10**9
    app = create_app(settings, lambda _: engine)
    with asgi.get_client(app) as client:  # starts the app's lifespan, which schemathesis' calls then share
        deadline = time.time() + 30
        while client.get("/ready").status_code != 200:
            assert time.time() < deadline, client.get("/ready").text
            time.sleep(0.05)
        yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(gateway: object) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", gateway, config=contract_config())


def failures(schema: schemathesis.BaseSchema) -> list[str]:
    """Run schemathesis' engine (what `schemathesis run` drives) and list every failed check and every error."""
    found = []
    for event in from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            for case_id, checks in event.recorder.checks.items():
                case = event.recorder.cases[case_id].value
                found += [f"{case.operation.label} [{check.name}] {check.failure_info.failure.title}: "
                          f"{check.failure_info.code_sample}" for check in checks if check.status == Status.FAILURE]
        elif isinstance(event, events.NonFatalError):
            found.append(f"{event.label}: error {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return found


def test_every_check_passes_on_every_operation(api_schema: schemathesis.BaseSchema):
    found = failures(api_schema)
    assert found == [], "\n".join(found)


def test_405_names_every_method_of_the_path_in_allow(client):
    """Starlette's 405 names only the first route's methods; /admin/training/runs has a GET and a POST route."""
    r = client.delete("/admin/training/runs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert client.put("/v1/feedback/pairs").headers["allow"] == "POST"  # not GET /v1/feedback/{feedback_id}'s
    assert client.get("/v1/chat/completions").headers["allow"] == "POST"


def test_documented_errors_and_metrics_content_type(client):
    document = client.get("/openapi.json").json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert {"400", "401", "404", "409", "429", "503"} <= set(chat["responses"]) and "422" not in chat["responses"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionBody"}
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert "HTTPValidationError" not in document["components"]["schemas"]
