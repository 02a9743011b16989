"""``GET /incidents/{id}`` with the collectives (contract 10), on incidents the real
recorder wrote: each rank's flight recorder per process group (null for a rank whose
stack py-spy took), the findings and which rule named each suspect; every field of
contract 8 as before. Another user sees who hung and by which rule, not the
collectives (incident_privacy)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.access.callers import Caller, current_caller
from app.main import create_app
from app.settings import Settings
from tests.app.job_seeds import BASE, JobSeed, seed
from tests.conftest import in_process

# Real dumps of a hung torchrun job: rank 1 skipped the 4th all_reduce.
SKIPPED = JobSeed("run-fr", first_id=1, world_size=3, stuck=1, uid=1000, recorders="skip")
PY_SPY = JobSeed("run-py", first_id=11, world_size=2, stuck=0, uid=1000, at=BASE + 100)
CONTRACT_8 = {"id", "job_id", "opened_at", "nodes", "trigger_timer_id", "ranks", "groups"}
RANK_8 = {"rank", "node", "pid", "timer_id", "outcome", "group"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    database = tmp_path_factory.mktemp("incidents") / "timers.db"
    seed(database, SKIPPED, PY_SPY)
    with in_process(create_app(Settings(db_url=f"sqlite:///{database}"))) as test_client:
        yield test_client


def incident_of(client: TestClient, job: str, caller: Caller | None = None) -> Any:
    app: Any = client.app
    app.dependency_overrides[current_caller] = lambda: (
        caller or Caller(os.geteuid(), "asgi", "TestClient")
    )
    try:
        (listed,) = client.get("/incidents", params={"job": job}).json()["items"]
        response = client.get(f"/incidents/{listed['id']}")
    finally:
        app.dependency_overrides.pop(current_caller)
    assert response.status_code == 200, response.text
    assert response.json() == listed
    return listed


def test_each_rank_shows_its_collectives_and_the_incident_the_skipped_one(
    client: TestClient,
) -> None:
    incident = incident_of(client, "run-fr")
    assert CONTRACT_8 | {"suspects", "summary"} <= incident.keys()
    assert incident["suspects"] == [1]
    assert incident["suspect_rules"] == {"1": "collective"}
    (finding,) = incident["collective_findings"]
    assert {k: finding[k] for k in ("pg", "ranks", "seq", "op", "missing", "mismatch")} == {
        "pg": "0",
        "ranks": [0, 2],
        "seq": 4,
        "op": "all_reduce",
        "missing": [1],
        "mismatch": None,
    }
    ranks = {rank["rank"]: rank for rank in incident["ranks"]}
    for number, rank in ranks.items():
        assert rank.keys() >= RANK_8
        assert rank["method"] == rank["stack_method"] == "worker-server"
        (group,) = rank["collectives"]
        assert (group["pg"], group["desc"]) == ("0", "default_pg")
        assert group["last_enqueued"] == (3 if number == 1 else 4)
        last = group["entries"][-1]
        assert last == {
            "seq": group["last_enqueued"],
            "op": "all_reduce",
            "sizes": [[8]],
            "dtypes": ["float32"],
            "state": last["state"],
        }
    assert "rank 1" in incident["summary"] and "all_reduce" in incident["summary"]


def test_a_rank_captured_by_py_spy_has_no_collectives(client: TestClient) -> None:
    incident = incident_of(client, "run-py")
    assert [rank["collectives"] for rank in incident["ranks"]] == [None, None]
    assert incident["collective_findings"] == []
    assert incident["suspect_rules"] == {"0": "stack"}


def test_another_user_sees_who_hung_and_by_which_rule_but_not_the_collectives(
    client: TestClient,
) -> None:
    incident = incident_of(client, "run-fr", Caller(4242, "tcp", "127.0.0.1:5000"))
    assert incident["summary"].startswith("frames hidden")
    assert incident["suspects"] == [1]
    assert incident["suspect_rules"] == {"1": "collective"}
    assert incident["collective_findings"] == []
    assert [rank["collectives"] for rank in incident["ranks"]] == [None, None, None]
    assert [rank["method"] for rank in incident["ranks"]] == ["worker-server"] * 3


def test_the_openapi_schema_names_the_new_fields(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"collective_findings", "suspect_rules"} <= schemas["IncidentPublic"][
        "properties"
    ].keys()
    assert "collectives" in schemas["IncidentCapturePublic"]["properties"]
    assert set(schemas["CollectiveEntryPublic"]["properties"]) == {
        "seq",
        "op",
        "sizes",
        "dtypes",
        "state",
    }
