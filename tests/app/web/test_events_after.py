"""``GET /events?after=ID``: the events recorded after one a client has seen, oldest
first, in pages whose ``next`` is the following page's ``after`` (what
``timer-service events --follow`` tails), with the log's other filters."""

from __future__ import annotations

import subprocess
from typing import Any

from fastapi.testclient import TestClient


def arm(client: TestClient, pid: int, scope: str) -> dict[str, Any]:
    response = client.post("/timers", json={"pid": pid, "scope_id": scope, "expires_in": 60})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def events(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/events", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_after_pages_oldest_first_from_just_after_the_id(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    for scope in ("a", "b", "c"):
        arm(client, sleeper.pid, scope)
    newest_first = events(client)["items"]
    assert len(newest_first) == 3
    oldest = newest_first[-1]
    page = events(client, after=oldest["id"], limit=1)
    assert page["items"] == [newest_first[1]]
    assert page["next"] == str(newest_first[1]["id"])
    last = events(client, after=page["next"], limit=1)
    assert last == {"items": [newest_first[0]], "next": None}
    assert events(client, after=newest_first[0]["id"]) == {"items": [], "next": None}
    assert events(client, after=0)["items"] == newest_first[::-1]


def test_after_keeps_the_other_filters(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    first = arm(client, sleeper.pid, "kept")
    released = client.post("/timers/release", json={"pid": sleeper.pid, "scope_id": "kept"})
    assert released.status_code == 200, released.text
    arm(client, sleeper.pid, "other")
    only = events(client, after=0, kind="released")["items"]
    assert [(e["kind"], e["timer_id"]) for e in only] == [("released", first["id"])]
    of_timer = events(client, after=0, timer_id=first["id"])["items"]
    assert [e["kind"] for e in of_timer] == ["acquired", "released"]


def test_after_with_cursor_or_a_bad_value_gets_a_422(client: TestClient) -> None:
    both = client.get("/events", params={"after": 1, "cursor": "5"})
    assert both.status_code == 422, both.text
    assert "not both" in both.json()["detail"][0]["msg"]
    for bad in ("-1", "x", str(2**63)):
        answer = client.get("/events", params={"after": bad})
        assert answer.status_code == 422, (bad, answer.text)
