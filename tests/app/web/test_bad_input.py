"""Every bad request gets a 4xx with a JSON detail, never a 5xx, and arms nothing."""

from __future__ import annotations

import os
import subprocess
import time

import httpx2
import pytest
from fastapi.testclient import TestClient

from tests.conftest import worker_node_of

PID = object()  # stands for the live sleeper's pid in the cases below


def assert_refused(
    client: TestClient, response: httpx2.Response, statuses: tuple[int, ...] = (422,)
) -> None:
    assert response.status_code in statuses, response.text
    assert "detail" in response.json()
    assert client.get("/timers", params={"state": "active"}).json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"scope_id": "s", "expires_in": 5},
        {"pid": "123", "scope_id": "s", "expires_in": 5},
        {"pid": 12.5, "scope_id": "s", "expires_in": 5},
        {"pid": True, "scope_id": "s", "expires_in": 5},
        {"pid": None, "scope_id": "s", "expires_in": 5},
        {"pid": PID, "scope_id": 5, "expires_in": 5},
        {"pid": PID, "scope_id": "", "expires_in": 5},
        {"pid": PID, "scope_id": "s"},
        {"pid": PID, "scope_id": "s", "expires_in": 5, "expiration_time": time.time() + 5},
        {"pid": PID, "scope_id": "s", "expires_in": -1},
        {"pid": PID, "scope_id": "s", "expires_in": 0},
        {"pid": PID, "scope_id": "s", "expires_in": "5"},
        {"pid": PID, "scope_id": "s", "expires_in": 31 * 86400},
        {"pid": PID, "scope_id": "s", "expiration_time": time.time() + 31 * 86400},
        {"pid": PID, "scope_id": "s", "expiration_time": -1},
        {"pid": PID, "scope_id": "s", "expires_in": 5, "signal": 999},
        {"pid": PID, "scope_id": "s", "expires_in": 5, "signal": "KILL"},
        {"pid": PID, "scope_id": "s", "expires_in": 5, "signal": 9.0},
        {"pid": PID, "scope_id": "x" * 1025, "expires_in": 5},
        {"pid": PID, "scope_id": "s", "expires_in": 5, "unknown_field": 1},
    ],
)
def test_malformed_acquire_bodies(
    client: TestClient, sleeper: subprocess.Popen[bytes], body: dict[str, object]
) -> None:
    body = {key: sleeper.pid if value is PID else value for key, value in body.items()}
    assert_refused(client, client.post("/timers", json=body))


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinite_expires_in(
    client: TestClient, sleeper: subprocess.Popen[bytes], raw: str
) -> None:
    text = f'{{"pid": {sleeper.pid}, "scope_id": "s", "expires_in": {raw}}}'
    response = client.post("/timers", content=text, headers={"content-type": "application/json"})
    assert_refused(client, response)


@pytest.mark.parametrize(
    "raw", [b"not json", b"{", b"\xff\xfe\x00", b"[]", b"null", b'"string"', b""]
)
def test_non_json_bodies(client: TestClient, raw: bytes) -> None:
    response = client.post("/timers", content=raw, headers={"content-type": "application/json"})
    assert_refused(client, response, (400, 422))


@pytest.mark.parametrize(
    ("pid", "why"),
    [
        (0, "init or every process"),
        (1, "init or every process"),
        (-1, "process group"),
        (-12345, "process group"),
        (2**40, "out of range"),
        (4_000_000, "no process"),
    ],
)
def test_dangerous_and_missing_pids(client: TestClient, pid: int, why: str) -> None:
    response = client.post("/timers", json={"pid": pid, "scope_id": "s", "expires_in": 0.01})
    assert_refused(client, response)
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "pid"] and why in error["msg"]
    refused = client.get("/events", params={"kind": "refused"}).json()["items"]
    assert refused and why in refused[0]["detail"]["reason"]


def test_the_service_and_its_ancestors_are_refused(manual_client: TestClient) -> None:
    # On a clock that stands still, a timer armed by mistake would still be active:
    # assert_refused would see it, and no one is killed to show it.
    client = manual_client
    for pid in (os.getpid(), os.getppid()):
        for signal in (9, 0):  # even observe-only
            body = {"pid": pid, "scope_id": "s", "expires_in": 0.01, "signal": signal}
            response = client.post("/timers", json=body)
            assert_refused(client, response)
            assert "itself or one of its ancestors" in response.json()["detail"][0]["msg"]
    assert worker_node_of(client).reaper.active() == []


def test_unknown_timer_ids(client: TestClient) -> None:
    assert client.get("/timers/424242").status_code == 404
    assert client.get("/timers/not-a-number").status_code == 422
    assert client.delete("/timers/424242").status_code == 404
    assert client.get("/timers", params={"cursor": "abc"}).status_code == 422
    assert client.get("/timers", params={"state": "zombie"}).status_code == 422
    assert client.get("/timers", params={"limit": 0}).status_code == 422


def test_hostile_scope_ids_are_stored_verbatim(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    """Markup, SQL and a right-to-left override are printable text: stored as sent.
    (A NUL, which this test once sent too, is now refused: see the next test.)"""
    hostile = "<img src=x onerror=alert(1)>'\"; DROP TABLE timers; --\u202e"
    response = client.post(
        "/timers", json={"pid": sleeper.pid, "scope_id": hostile, "expires_in": 60}
    )
    assert response.status_code == 201
    assert client.get(f"/timers/{response.json()['id']}").json()["scope_id"] == hostile


def test_a_scope_id_with_a_nul_is_refused(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    """The engine's rule for every source (request_text): no control characters."""
    response = client.post(
        "/timers", json={"pid": sleeper.pid, "scope_id": "a\x00b", "expires_in": 60}
    )
    assert_refused(client, response)
    assert "U+0000" in response.json()["detail"][0]["msg"]


def test_release_with_bad_bodies(client: TestClient) -> None:
    for body in ({}, {"pid": "1", "scope_id": "s"}, {"pid": 5}):
        response = client.post("/timers/release", json=body)
        assert response.status_code == 422 and "detail" in response.json()
