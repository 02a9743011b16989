"""schemathesis against the service's own OpenAPI schema: no 5xx, no response that
breaks the schema. Generated pids name real processes of this machine, so the
service runs with a signaller that records instead of signalling."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process, worker_node_of
from tests.reliability.recording import RecordingSignaller
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def fuzzed_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    # schemathesis sends Host: testserver; the service answers only to names it is given.
    settings = Settings(
        db_url=f"sqlite:///{db}", commit_timeout=2.0, allowed_hosts=("testserver", "localhost")
    )
    app = create_app(settings, signaller=RecordingSignaller())
    with in_process(app) as client:  # runs the lifespan: migrations, reaper, recorder
        yield client


@pytest.fixture(scope="module")
def fuzzed_app(fuzzed_client: TestClient) -> FastAPI:
    app = fuzzed_client.app
    assert isinstance(app, FastAPI)
    return app


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


def test_the_fuzzed_service_signals_through_the_recorder_only(
    fuzzed_client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    # Runs before the fuzzer, on the same app: a due timer on a real process of this
    # machine reaches the recording signaller and leaves the process alive, so what
    # the fuzzer arms cannot hit anything.
    recorder = worker_node_of(fuzzed_client).signaller
    assert isinstance(recorder, RecordingSignaller)
    body = {"pid": sleeper.pid, "scope_id": "recorded", "expires_in": 0.1}
    response = fuzzed_client.post("/timers", json=body)
    assert response.status_code == 201, response.text
    assert wait_until(lambda: any(pid == sleeper.pid for pid, _ in recorder.sent))
    assert sleeper.poll() is None


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(case: Case[Any]) -> None:
    case.call_and_validate(
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
    )
