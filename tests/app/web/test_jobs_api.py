"""``GET /jobs`` and ``GET /jobs/{job_id}`` (contract 8) on jobs written by the real
recorder: newest activity first with keyset pages, the ranks, active timers and nodes
counted from the timers, and each rank's latest timer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.job_seeds import BASE, JobSeed, seed
from tests.conftest import in_process
from tests.sample_events import timer_of
from timer_core import EventKind

HUNG = JobSeed("run-9", first_id=1)  # 4 ranks on node-a, rank 2 killed in an incident
LATER = JobSeed("job-b", first_id=11, world_size=2, stuck=None, at=BASE + 100, node="node-b")
HOSTILE = JobSeed("<script>alert(1)</script>/a b?c#d", first_id=21, world_size=1, stuck=None)


def serve(tmp_path: Path, *jobs: Any) -> TestClient:
    database = tmp_path / "timers.db"
    seed(database, *jobs)
    return in_process(create_app(Settings(db_url=f"sqlite:///{database}")))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # Rank 1 of job-b moves to node-c (a restart) with a second timer, and rank 0's
    # timer ends: still 2 ranks, 1 active timer, on both nodes.
    moved = dataclasses.replace(LATER, node="node-c", first_id=13, at=BASE + 200)
    left = LATER.labelled(EventKind.RELEASED, 1, "released", BASE + 199)
    rank_one = [e for e in moved.events() if timer_of(e).labels.rank == 1]
    ended = LATER.labelled(EventKind.RELEASED, 0, "released", BASE + 201)
    with serve(tmp_path, HUNG, LATER, left, *rank_one, ended, HOSTILE) as test_client:
        yield test_client


def jobs(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/jobs", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_jobs_come_newest_activity_first_with_what_their_timers_say(client: TestClient) -> None:
    answer = jobs(client)
    assert answer["next"] is None
    by_id = {job["job_id"]: job for job in answer["items"]}
    assert [job["job_id"] for job in answer["items"]] == ["job-b", HUNG.job_id, HOSTILE.job_id]
    assert by_id["run-9"] == {
        "job_id": "run-9",
        "uid": 1000,  # whose job: its workers' uid
        "world_size": 4,
        "ranks_seen": 4,
        "active_timers": 3,  # rank 2 was killed
        "nodes": ["node-a"],
        "first_seen": BASE,
        "last_seen": BASE + 10.1,
        "incidents": 1,
    }
    # A rank seen on two nodes is one rank; only its newest timer is active.
    assert by_id["job-b"]["ranks_seen"] == 2
    assert by_id["job-b"]["active_timers"] == 1
    assert by_id["job-b"]["nodes"] == ["node-b", "node-c"]
    assert by_id["job-b"]["incidents"] == 0


def test_pages_follow_the_cursor_without_loss_even_on_equal_last_seen(tmp_path: Path) -> None:
    # Ten jobs, two by two seen at the same instant: the cursor orders ties by job id.
    seeds = [
        JobSeed(f"job-{n}", first_id=10 * n + 1, world_size=1, stuck=None, at=BASE + n // 2)
        for n in range(10)
    ]
    with serve(tmp_path, *seeds) as client:
        seen: list[str] = []
        cursor = None
        while True:
            page = jobs(client, limit=3, **({"cursor": cursor} if cursor else {}))
            seen += [job["job_id"] for job in page["items"]]
            cursor = page["next"]
            if cursor is None:
                break
        expected = sorted(seeds, key=lambda job: (job.at, job.job_id), reverse=True)
        assert seen == [job.job_id for job in expected]


def test_a_job_lists_the_latest_timer_of_each_rank(client: TestClient) -> None:
    response = client.get("/jobs/job-b")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["ranks_seen"], job["world_size"]) == (2, 2)
    assert job["ranks"] == [
        {
            "rank": 0,
            "local_rank": 0,
            "restart_count": None,  # the seeded workers were never restarted by torchrun
            "node": "node-b",
            "pid": 500,
            "timer_id": 11,
            "state": "released",
            "scope_id": "step-0",
            "last_seen": BASE + 201,
            "slowdown": None,  # contract 12: no straggler window seen by this service
        },
        {
            "rank": 1,
            "local_rank": 1,
            "restart_count": None,
            "node": "node-c",  # the newer timer, on the node it moved to
            "pid": 501,
            "timer_id": 14,
            "state": "active",
            "scope_id": "step-1",
            "slowdown": None,
            "last_seen": BASE + 201,
        },
    ]
    states = [rank["state"] for rank in client.get("/jobs/run-9").json()["ranks"]]
    assert states == ["active", "active", "killed", "active"]


def test_any_job_id_is_reached_by_its_quoted_path(client: TestClient) -> None:
    response = client.get("/jobs/" + quote(HOSTILE.job_id))
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == HOSTILE.job_id


def test_an_unknown_job_is_a_404_with_a_detail(client: TestClient) -> None:
    response = client.get("/jobs/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "no job 'nope'"}


@pytest.mark.parametrize(
    "path",
    ["/jobs?limt=2", "/jobs?cursor=!!", "/jobs?cursor=bm9wZQ", "/jobs?limit=0", "/jobs/run-9?x=1"],
)
def test_unknown_parameters_and_foreign_cursors_are_422(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_a_job_id_two_users_claim_is_two_jobs_chosen_by_uid(tmp_path: Path) -> None:
    """A job is its id and its owner: neither user's ranks replace the other's. The
    caller here (the service's uid) owns neither, so without ?uid= it is asked whose,
    with 409 on the API and the list of owners on the page."""
    first = JobSeed("shared", first_id=1, uid=1001, world_size=2, stuck=None)
    second = JobSeed("shared", first_id=11, uid=1002, world_size=1, first_pid=600, at=BASE + 50)
    with serve(tmp_path, first, second) as client:
        listed = [(job["job_id"], job["uid"], job["ranks_seen"]) for job in jobs(client)["items"]]
        assert listed == [("shared", 1002, 1), ("shared", 1001, 2)]
        # One job a page: the cursor tells the two owners of one id apart.
        page = jobs(client, limit=1)
        assert [job["uid"] for job in jobs(client, limit=1, cursor=page["next"])["items"]] == [1001]

        ambiguous = client.get("/jobs/shared")
        assert ambiguous.status_code == 409
        assert "1001, 1002" in ambiguous.json()["detail"] and "?uid=" in ambiguous.json()["detail"]
        mine = client.get("/jobs/shared", params={"uid": 1001}).json()
        assert [rank["pid"] for rank in mine["ranks"]] == [500, 501]
        assert mine["incidents"] == 0
        theirs = client.get("/jobs/shared", params={"uid": 1002}).json()
        assert ([rank["pid"] for rank in theirs["ranks"]], theirs["incidents"]) == ([600], 1)
        assert client.get("/jobs/shared", params={"uid": 7}).status_code == 404

        # The dashboard's rows of one id link to each owner's job.
        dashboard = client.get("/").text
        for uid in (1001, 1002):
            assert f'href="/ui/jobs/shared?uid={uid}"' in dashboard
        choose = client.get("/ui/jobs/shared")
        assert choose.status_code == 409
        assert 'href="/ui/jobs/shared?uid=1001"' in choose.text
        assert 'href="/ui/jobs/shared?uid=1002"' in choose.text
        shown = client.get("/ui/jobs/shared", params={"uid": 1002})
        assert shown.status_code == 200 and 'data-uid="1002"' in shown.text
        assert 'data-timer-id="1"' not in shown.text and 'data-timer-id="11"' in shown.text
