"""Every timer says which node armed it and which rank of which job its worker is
(contract 8): read from the worker's environment as torchrun sets it, or given in the
request; bad labels get 422 and arm nothing; garbage in an environment is null."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process
from tests.waiting import wait_until
from tests.workers import SLEEPER

TORCHRUN_ENV = {
    "TORCHELASTIC_RUN_ID": "run-42",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "8",
}


def spawn_with(environment: dict[str, str], sleepers: list[subprocess.Popen[bytes]]) -> int:
    process = subprocess.Popen([sys.executable, "-c", SLEEPER], env={**os.environ, **environment})
    sleepers.append(process)
    return process.pid


def arm(client: TestClient, pid: int, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/timers", json={"pid": pid, "scope_id": "step", "expires_in": 60, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def labels(timer: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(timer[name] for name in ("node", "job_id", "rank", "local_rank", "world_size"))


@pytest.fixture
def named_client(settings: Settings) -> Iterator[TestClient]:
    with in_process(create_app(replace(settings, node_name="node-a"))) as test_client:
        yield test_client


def test_labels_come_from_the_workers_environment(
    named_client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    pid = spawn_with(TORCHRUN_ENV, sleepers)
    timer = arm(named_client, pid)
    assert labels(timer) == ("node-a", "run-42", 3, 1, 8)
    assert labels(named_client.get(f"/timers/{timer['id']}").json()) == labels(timer)


def test_labels_in_the_request_override_the_environment(
    named_client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    pid = spawn_with(TORCHRUN_ENV, sleepers)
    timer = arm(named_client, pid, job_id="explicit", rank=5)
    assert labels(timer) == ("node-a", "explicit", 5, 1, 8)


def test_the_node_defaults_to_the_host_name(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer = arm(client, sleeper.pid)
    assert labels(timer) == (socket.gethostname(), None, None, None, None)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        # A rank out of range, a job id too long: null; the world size is well-formed.
        (
            {"RANK": "-1", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "x" * 257},
            (None, None, None, 4),
        ),
        # Rank 9 of 4: one of them is wrong, so the rank is doubted and the size kept.
        (
            {"RANK": "9", "WORLD_SIZE": "4", "LOCAL_RANK": "1e3", "TORCHELASTIC_RUN_ID": ""},
            (None, None, None, 4),
        ),
        (
            {"RANK": "٣", "WORLD_SIZE": "0", "LOCAL_RANK": "99999999999999999999"},
            (None, None, None, None),
        ),
        (
            {"TORCHELASTIC_RUN_ID": "bad\nline", "RANK": " 1", "WORLD_SIZE": "four"},
            (None, None, None, None),
        ),
    ],
)
def test_garbage_in_the_environment_gives_null_labels_never_an_error(
    client: TestClient,
    sleepers: list[subprocess.Popen[bytes]],
    environment: dict[str, str],
    expected: tuple[Any, ...],
) -> None:
    pid = spawn_with(environment, sleepers)
    timer = arm(client, pid)
    assert labels(timer)[1:] == expected


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"rank": -1}, "rank"),
        ({"rank": 4, "world_size": 4}, "rank"),
        ({"job_id": "j" * 257}, "job_id"),
        ({"job_id": 17}, "job_id"),
        ({"job_id": ""}, "job_id"),
        ({"job_id": "a\x00b"}, "job_id"),
        ({"job_id": "forged\nline"}, "job_id"),
        ({"world_size": 0}, "world_size"),
        ({"local_rank": "1"}, "local_rank"),
        ({"rank": True}, "rank"),
    ],
)
def test_bad_labels_get_422_and_arm_nothing(
    client: TestClient, sleeper: subprocess.Popen[bytes], extra: dict[str, Any], field: str
) -> None:
    response = client.post(
        "/timers", json={"pid": sleeper.pid, "scope_id": "step", "expires_in": 60, **extra}
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    assert client.get("/timers").json()["items"] == []


def test_the_list_filters_by_job_rank_and_node(
    named_client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    armed = {
        (job, rank): arm(
            named_client, spawn_with({}, sleepers), job_id=job, rank=rank, world_size=2
        )
        for job in ("a", "b")
        for rank in (0, 1)
    }

    def ids(**params: Any) -> set[int]:
        response = named_client.get("/timers", params=params)
        assert response.status_code == 200, response.text
        return {timer["id"] for timer in response.json()["items"]}

    assert ids(job="a") == {armed["a", 0]["id"], armed["a", 1]["id"]}
    assert ids(job="b", rank=1) == {armed["b", 1]["id"]}
    assert ids(node="node-a") == {timer["id"] for timer in armed.values()}
    assert ids(node="elsewhere") == set()
    assert named_client.get("/timers", params={"rank": -1}).status_code == 422
    assert named_client.get("/timers", params={"rank": "x"}).status_code == 422


def test_labels_survive_a_restart(
    settings: Settings, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    pid = spawn_with(TORCHRUN_ENV, sleepers)
    named = replace(settings, node_name="node-a")
    with in_process(create_app(named)) as first:
        timer = arm(first, pid, rank=2)
    with in_process(create_app(named)) as second:
        assert wait_until(lambda: second.get(f"/timers/{timer['id']}").json()["state"] == "active")
        service_timers = second.get("/timers", params={"state": "active"}).json()["items"]
        assert [labels(t) for t in service_timers] == [("node-a", "run-42", 2, 1, 8)]
        # Re-armed with its labels: the engine's copy has them too.
        [live] = second.app.state.service.keeper.reaper.active()  # type: ignore[attr-defined]
        assert (live.labels.job_id, live.labels.rank, live.labels.world_size) == ("run-42", 2, 8)
        # A new scope of the same worker after the restart: labelled from its environment.
        assert labels(arm(second, pid, scope_id="after"))[1:] == ("run-42", 3, 1, 8)


def test_a_restart_rearms_only_this_nodes_timers(
    settings: Settings, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    pid = spawn_with({}, sleepers)
    with in_process(create_app(replace(settings, node_name="node-a"))) as first:
        timer = arm(first, pid)
    with in_process(create_app(replace(settings, node_name="node-b"))) as other:
        assert other.app.state.service.keeper.reaper.active() == []  # type: ignore[attr-defined]
        # Still shown, still active: node-a's to re-arm when it comes back.
        assert other.get(f"/timers/{timer['id']}").json()["state"] == "active"
