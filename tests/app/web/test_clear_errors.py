"""Errors that say what to do: a duration sent as a deadline, a body not sent as
JSON, a filter value or name the route does not know. Each gets a 4xx with a
JSON detail, and arms (and kills) nothing."""

from __future__ import annotations

import json
import subprocess
import time

import httpx2
import pytest
from fastapi.testclient import TestClient

from app.web.routers.timers import PAST_GRACE_SECONDS
from tests.workers import wait_dead
from timer_core.engine import EventKind
from timer_core.engine.arm_request import ArmRequest, Origin

# The engine's kinds, as the API spells them.
EVENT_KINDS = [kind.value for kind in EventKind]


def assert_nothing_armed(client: TestClient) -> None:
    assert client.get("/timers").json()["items"] == []
    kinds = {event["kind"] for event in client.get("/events").json()["items"]}
    assert not kinds & {"acquired", "killed", "expired"}


# ---- a duration sent as expiration_time -------------------------------------------------


@pytest.mark.parametrize("expiration_time", [1000, 60.0, "an hour ago", "grace + 1 s ago"])
def test_an_expiration_time_well_in_the_past_gets_a_422_that_suggests_expires_in(
    client: TestClient, sleeper: subprocess.Popen[bytes], expiration_time: object
) -> None:
    if expiration_time == "an hour ago":
        expiration_time = time.time() - 3600
    elif expiration_time == "grace + 1 s ago":
        expiration_time = time.time() - PAST_GRACE_SECONDS - 1
    body = {"pid": sleeper.pid, "scope_id": "s", "expiration_time": expiration_time}
    response = client.post("/timers", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "expiration_time"]
    assert "in the past" in error["msg"] and "unix seconds" in error["msg"]
    assert "expires_in" in error["msg"]
    assert_nothing_armed(client)
    assert sleeper.poll() is None


def test_the_message_says_how_far_in_the_past(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    body = {"pid": sleeper.pid, "scope_id": "s", "expiration_time": 1000}
    [error] = client.post("/timers", json=body).json()["detail"]
    assert error["msg"].startswith("expiration_time 1000.0 is 1.")
    assert "e+09 s in the past" in error["msg"]


def test_a_deadline_that_just_passed_still_fires_at_once(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    # Clock skew or a slow request: within the grace window it is today's behaviour.
    body = {"pid": sleeper.pid, "scope_id": "s", "expiration_time": time.time() - 1}
    response = client.post("/timers", json=body)
    assert response.status_code == 201, response.text
    assert wait_dead(sleeper) == -9


def test_a_heartbeat_with_a_past_expiration_time_leaves_the_timer_as_it_was(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    armed = client.post("/timers", json={"pid": sleeper.pid, "scope_id": "s", "expires_in": 60})
    assert armed.status_code == 201
    body = {"pid": sleeper.pid, "scope_id": "s", "expiration_time": 1000}
    assert client.post("/timers", json=body).status_code == 422
    timer = client.get(f"/timers/{armed.json()['id']}").json()
    assert timer["state"] == "active"
    assert timer["expiration_time"] == armed.json()["expiration_time"]


def test_the_fifo_keeps_torchs_semantics_for_past_deadlines() -> None:
    # What the FIFO source calls: a past deadline (even 1000) is armed and fires.
    from tests.timer_core.world import World

    world = World()
    assert world.reaper.apply(ArmRequest(100, "s", 1000.0, 9), Origin("fifo"))
    world.advance(0)
    assert world.signaller.sent == [(100, 9)]


# ---- a body not sent as JSON ------------------------------------------------------------

NOT_JSON = [
    pytest.param(None, id="no-content-type"),
    pytest.param("text/plain", id="text-plain"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
    pytest.param("application/jsonx", id="almost-json"),
    pytest.param("text/json", id="text-json"),
]


def send(
    client: TestClient, path: str, body: dict[str, object], content_type: str | None
) -> httpx2.Response:
    headers = {"content-type": content_type} if content_type is not None else {}
    return client.post(path, content=json.dumps(body).encode(), headers=headers)


@pytest.mark.parametrize("content_type", NOT_JSON)
def test_acquire_without_json_content_type_gets_a_415_naming_application_json(
    client: TestClient, sleeper: subprocess.Popen[bytes], content_type: str | None
) -> None:
    body = {"pid": sleeper.pid, "scope_id": "s", "expires_in": 0.1}
    response = send(client, "/timers", body, content_type)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert "content-type: application/json" in detail and "send the body as JSON" in detail
    assert_nothing_armed(client)
    assert sleeper.poll() is None


@pytest.mark.parametrize("content_type", NOT_JSON)
def test_release_without_json_content_type_gets_a_415_and_releases_nothing(
    client: TestClient, sleeper: subprocess.Popen[bytes], content_type: str | None
) -> None:
    armed = client.post("/timers", json={"pid": sleeper.pid, "scope_id": "s", "expires_in": 60})
    response = send(client, "/timers/release", {"pid": sleeper.pid, "scope_id": "s"}, content_type)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert client.get(f"/timers/{armed.json()['id']}").json()["state"] == "active"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
    ],
)
def test_every_json_content_type_is_accepted(
    client: TestClient, sleeper: subprocess.Popen[bytes], content_type: str
) -> None:
    body = {"pid": sleeper.pid, "scope_id": "s", "expires_in": 60}
    assert send(client, "/timers", body, content_type).status_code == 201
    released = send(client, "/timers/release", {"pid": sleeper.pid, "scope_id": "s"}, content_type)
    assert released.status_code == 200 and released.json()["state"] == "released"


def test_the_415_is_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "415" in paths["/timers"]["post"]["responses"]
    assert "415" in paths["/timers/release"]["post"]["responses"]


# ---- filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/events", {"kind": "bogus"}),
        ("/events", {"kind": "KILLED"}),
        ("/events", {"kind": ""}),
        ("/events", {"timer_id": "one"}),
        ("/events", {"limit": "1001"}),
        ("/events", {"cursor": "abc"}),
        ("/events", {"kinds": "killed"}),
        ("/events", {"state": "killed"}),
        ("/timers", {"state": "bogus"}),
        ("/timers", {"state": ""}),
        ("/timers", {"pid": "abc"}),
        ("/timers", {"limit": "0"}),
        ("/timers", {"cursor": "-1"}),
        ("/timers", {"scope": "x" * 1025}),
        ("/timers", {"stat": "killed"}),
        ("/timers", {"kind": "killed"}),
    ],
)
def test_every_unknown_filter_value_or_name_gets_a_422(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))]


def test_an_unknown_filter_name_is_told_the_known_ones(client: TestClient) -> None:
    [error] = client.get("/timers", params={"stat": "killed"}).json()["detail"]
    known = "cursor, job, limit, node, pid, rank, restart_count, scope, state"
    assert error["msg"] == f"unknown query parameter; this route takes {known}"


def test_an_unknown_kind_is_told_the_known_ones(client: TestClient) -> None:
    [error] = client.get("/events", params={"kind": "bogus"}).json()["detail"]
    assert all(f"'{kind}'" in error["msg"] for kind in EVENT_KINDS)


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_known_kind_is_a_valid_filter(client: TestClient, kind: str) -> None:
    response = client.get("/events", params={"kind": kind, "timer_id": 1, "limit": 5})
    assert response.status_code == 200 and response.json() == {"items": [], "next": None}


def test_the_kind_filter_lists_the_engines_kinds_in_the_schema(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/events"]["get"]["parameters"]
    [kind] = [p for p in parameters if p["name"] == "kind"]
    assert kind["schema"]["anyOf"][0]["enum"] == list(EVENT_KINDS)
    assert set(EVENT_KINDS) >= {"acquired", "killed", "refused", "escalated"}
