"""schemathesis against the service's own OpenAPI schema: no 5xx, no response that
breaks the schema. Generated pids name real processes of this machine, so the
service runs with a signaller that records instead of signalling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process
from tests.reliability.recording import RecordingSignaller

schemathesis = pytest.importorskip("schemathesis")
checks = pytest.importorskip("schemathesis.checks")


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    # schemathesis sends Host: testserver; the service answers only to names it is given.
    settings = Settings(
        db_url=f"sqlite:///{db}", commit_timeout=2.0, allowed_hosts=("testserver", "localhost")
    )
    app = create_app(settings)
    app.state.service.signaller = RecordingSignaller()
    with in_process(app):  # runs the lifespan: migrations, reaper, recorder
        yield app


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> object:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(case: object) -> None:
    case.call_and_validate(  # type: ignore[attr-defined]
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
    )


def test_fuzzing_never_signalled_anything_for_real(fuzzed_app: FastAPI) -> None:
    # Whatever the fuzzer armed went to the recording signaller: nothing real was hit.
    assert isinstance(fuzzed_app.state.service.signaller, RecordingSignaller)
    assert Path("/proc/1").exists()
