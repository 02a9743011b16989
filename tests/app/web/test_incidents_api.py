"""``GET /incidents``, ``/incidents/{id}`` and a rank's stack (contract 8), on incidents
the real recorder wrote from incident events carrying recorded torchrun stacks; and who
may see what of them (contract 7): the frames and summary only those who may read
every captured rank's stack, a rank's stack only those who may read it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.access.callers import Caller, current_caller
from app.main import create_app
from app.settings import Settings
from tests.app.job_seeds import BASE, SLEEPING, JobSeed, seed
from tests.app.service_process import ServiceProcess, ask_as, refusals
from tests.conftest import in_process
from tests.second_user import SERVICE_AS_ROOT, SecondUser
from tests.waiting import wait_until

# Rank 2 asleep, rank 3 no stack: both suspects, for nothing shows rank 3 waiting.
HUNG = JobSeed("run-9", first_id=1, uid=1000, missing=3)
OTHER = JobSeed("run-10", first_id=11, world_size=2, stuck=0, uid=1000, at=BASE + 100)
SERVICE = Caller(os.geteuid(), "asgi", "TestClient")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    database = tmp_path / "timers.db"
    seed(database, HUNG, OTHER)
    with in_process(create_app(Settings(db_url=f"sqlite:///{database}"))) as test_client:
        yield test_client


def as_caller(client: TestClient, caller: Caller) -> TestClient:
    app: Any = client.app
    app.dependency_overrides[current_caller] = lambda: caller
    return client


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_incidents_come_newest_first_with_ranks_groups_suspects_and_summary(
    client: TestClient,
) -> None:
    answer = get(client, "/incidents")
    assert answer["next"] is None
    assert [item["job_id"] for item in answer["items"]] == ["run-10", "run-9"]
    incident = answer["items"][1]
    assert incident == get(client, f"/incidents/{incident['id']}")
    assert incident["suspects"] == [2, 3]
    assert incident["summary"] == (
        "rank 2 stuck in step (train.py:6); rank 3 gave no stack; "
        "ranks 0-1 wait in all_reduce (train.py:7)"
    ), incident
    assert (incident["opened_at"], incident["nodes"]) == (BASE + 10, ["node-a"])
    assert incident["trigger_timer_id"] == 3
    ranks = {rank["rank"]: rank for rank in incident["ranks"]}
    assert sorted(ranks) == [0, 1, 2, 3]
    assert ranks[2]["outcome"] == "killed" and ranks[0]["outcome"] == "captured"
    assert ranks[3]["stack_method"] is None and "gone" in ranks[3]["stack_note"]
    assert (ranks[3]["method"], ranks[2]["method"]) == (None, "py-spy")
    stuck = next(group for group in incident["groups"] if 2 in group["ranks"])
    waiting = next(group for group in incident["groups"] if 0 in group["ranks"])
    assert stuck["ranks"] == [2] and waiting["ranks"] == [0, 1]
    assert stuck["frames"][0] == "step (train.py:6)", stuck
    assert ranks[2]["group"] == stuck["group"] and ranks[1]["group"] == waiting["group"]


def test_the_job_filter_and_pages(client: TestClient) -> None:
    only = get(client, "/incidents", job="run-9")["items"]
    assert [item["job_id"] for item in only] == ["run-9"]
    assert get(client, "/incidents", job="nope")["items"] == []
    first = get(client, "/incidents", limit=1)
    assert [item["job_id"] for item in first["items"]] == ["run-10"]
    second = get(client, "/incidents", limit=1, cursor=first["next"])
    assert [item["job_id"] for item in second["items"]] == ["run-9"]
    assert second["next"] is None


def capture_of(client: TestClient, rank: int) -> tuple[int, int]:
    [incident] = get(client, "/incidents", job="run-9")["items"]
    [row] = [row for row in incident["ranks"] if row["rank"] == rank]
    return incident["id"], row["capture_id"]


def test_a_ranks_stack_is_served_as_text(client: TestClient) -> None:
    incident_id, capture_id = capture_of(client, 2)
    response = client.get(f"/incidents/{incident_id}/captures/{capture_id}/stack")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-stack-method"] == "py-spy"
    assert response.text == SLEEPING


def test_missing_incidents_captures_and_stacks_are_404(client: TestClient) -> None:
    incident_id, no_stack = capture_of(client, 3)
    [other] = get(client, "/incidents", job="run-10")["items"]
    paths = [
        "/incidents/999",
        f"/incidents/{incident_id}/captures/{no_stack}/stack",  # the capture failed
        f"/incidents/{other['id']}/captures/{capture_of(client, 0)[1]}/stack",  # not its own
        f"/incidents/{incident_id}/captures/999/stack",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 404, path
        assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "path", ["/incidents?jobs=run-9", "/incidents/1?x=1", "/incidents?cursor=a"]
)
def test_unknown_parameters_are_422(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 422


def test_the_owner_of_every_rank_sees_everything(client: TestClient) -> None:
    as_caller(client, Caller(1000, "tcp", "127.0.0.1:5000"))
    incident_id, capture_id = capture_of(client, 2)
    incident = get(client, f"/incidents/{incident_id}")
    assert incident["summary"].startswith("rank 2 stuck")
    assert all(group["frames"] for group in incident["groups"])
    response = client.get(f"/incidents/{incident_id}/captures/{capture_id}/stack")
    assert response.status_code == 200 and response.text == SLEEPING


@pytest.mark.parametrize(
    ("caller", "why"),
    [
        (Caller(4242, "tcp", "127.0.0.1:5000"), "frames hidden: ranks belong to uid 1000"),
        (Caller(None, "remote", "10.0.0.9:5000"), "frames hidden: the service cannot tell who"),
    ],
)
def test_another_user_sees_who_hung_but_not_where(
    client: TestClient, caller: Caller, why: str
) -> None:
    as_caller(client, caller)
    listed = get(client, "/incidents", job="run-9")["items"][0]
    incident = get(client, f"/incidents/{listed['id']}")
    for shown in (listed, incident):
        assert shown["summary"].startswith(why), shown["summary"]
        assert "train.py" not in shown["summary"] and "wait" not in shown["summary"]
        assert shown["suspects"] == [2, 3]
        assert [group["frames"] for group in shown["groups"]] == [[], []]
        # Rank 3 has no stack, so no group.
        assert sorted(rank for group in shown["groups"] for rank in group["ranks"]) == [0, 1, 2]
        assert sorted(rank["rank"] for rank in shown["ranks"]) == [0, 1, 2, 3]


def test_another_users_read_of_a_ranks_stack_is_refused_and_logged(client: TestClient) -> None:
    incident_id, capture_id = capture_of(client, 2)
    as_caller(client, Caller(4242, "tcp", "127.0.0.1:5000"))
    response = client.get(f"/incidents/{incident_id}/captures/{capture_id}/stack")
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "belongs to uid 1000" in detail and "time.sleep" not in response.text
    as_caller(client, SERVICE)

    def refused() -> list[Any]:
        return [
            item
            for item in get(client, "/events", kind="refused")["items"]
            if item["detail"].get("reason") == detail
        ]

    assert wait_until(lambda: bool(refused()), timeout=5)
    assert refused()[0]["pid"] == HUNG.pid(2) and refused()[0]["scope_id"] == "step-2"


@SERVICE_AS_ROOT[0]
@SERVICE_AS_ROOT[1]
@SERVICE_AS_ROOT[2]
def test_a_real_second_user_sees_its_own_jobs_stacks_and_not_roots(tmp_path: Path) -> None:
    """The real service, run as root, and a real second user calling it over loopback
    TCP: the kernel names the caller, no override."""
    other = SecondUser.named("ts-incidents")
    roots = JobSeed("roots-job", first_id=1, uid=0)
    theirs = JobSeed("their-job", first_id=11, uid=other.uid, at=BASE + 100)
    service = ServiceProcess(tmp_path)
    seed(tmp_path / "service.db", roots, theirs)
    service.start()
    try:
        target = service.url.replace("http://", "tcp://")
        status, listed = ask_as(other, target, "GET", "/incidents")
        assert status == 200, listed
        by_job = {item["job_id"]: item for item in listed["items"]}
        hidden, own = by_job["roots-job"], by_job["their-job"]
        assert hidden["summary"].startswith("frames hidden: ranks belong to uid 0"), hidden
        assert all(group["frames"] == [] for group in hidden["groups"])
        assert hidden["suspects"] == [2]
        assert own["summary"].startswith("rank 2 stuck in step"), own
        assert all(group["frames"] for group in own["groups"])

        def stack(incident: dict[str, Any]) -> tuple[int, Any]:
            [rank] = [rank for rank in incident["ranks"] if rank["rank"] == 2]
            path = f"/incidents/{incident['id']}/captures/{rank['capture_id']}/stack"
            return ask_as(other, target, "GET", path)

        assert stack(own) == (200, SLEEPING)
        status, refusal = stack(hidden)
        assert status == 403 and "belongs to uid 0" in refusal["detail"]
        assert wait_until(lambda: refusal["detail"] in refusals(service), timeout=10)
        # Root (the service's own user) sees everything of both.
        as_root = httpx.get(f"{service.url}/incidents/{hidden['id']}").json()
        assert as_root["summary"].startswith("rank 2 stuck in step"), as_root
    finally:
        service.stop()
