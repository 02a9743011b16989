"""The REST API through TestClient, on a real SQLite file, against real processes."""

from __future__ import annotations

import subprocess
from typing import Any

from fastapi.testclient import TestClient

from app.db.models import TimerPublic
from tests.conftest import step_past, worker_node_of
from tests.waiting import wait_until
from tests.workers import wait_dead
from timer_core import ManualClock


def arm(client: TestClient, pid: int, scope: str = "step", **extra: object) -> dict[str, Any]:
    response = client.post("/timers", json={"pid": pid, "scope_id": scope, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def events_of(client: TestClient, timer_id: int) -> list[str]:
    response = client.get("/events", params={"timer_id": timer_id})
    return [event["kind"] for event in reversed(response.json()["items"])]


def wait_state(client: TestClient, timer_id: int, state: str) -> dict[str, Any]:
    def timer() -> dict[str, Any]:
        body: dict[str, Any] = client.get(f"/timers/{timer_id}").json()
        return body

    assert wait_until(lambda: timer()["state"] == state), f"never {state}: {timer()}"
    return timer()


def test_acquire_is_committed_and_readable_at_once(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer = arm(client, sleeper.pid, expires_in=60)
    assert timer["state"] == "active" and timer["pid"] == sleeper.pid and timer["signal"] == 9
    assert client.get(f"/timers/{timer['id']}").json()["state"] == "active"
    assert events_of(client, timer["id"]) == ["acquired"]


def test_expired_worker_is_killed_and_recorded(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer = arm(client, sleeper.pid, expires_in=0.2)
    assert wait_dead(sleeper) == -9
    body = wait_state(client, timer["id"], "killed")
    assert body["ended_at"] is not None and body["ended_at"] >= body["expiration_time"]
    assert events_of(client, timer["id"]) == ["acquired", "killed"]


def test_heartbeat_returns_200_with_the_same_timer_and_moves_the_deadline(
    manual_client: TestClient, manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    client = manual_client
    first = arm(client, sleeper.pid, expires_in=1.0)
    again = client.post("/timers", json={"pid": sleeper.pid, "scope_id": "step", "expires_in": 60})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert again.json()["expiration_time"] > first["expiration_time"]
    step_past(client, manual_clock, first["expiration_time"])
    # Had the first deadline held, the step would have taken the timer out to kill it.
    assert [view.id for view in worker_node_of(client).reaper.active()] == [first["id"]]
    assert sleeper.poll() is None
    assert (
        client.get(f"/timers/{first['id']}").json()["expiration_time"]
        == again.json()["expiration_time"]
    )


def test_release_by_pid_and_scope_spares_the_worker(
    manual_client: TestClient, manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    client = manual_client
    bus = worker_node_of(client).reaper.bus
    timer = arm(client, sleeper.pid, expires_in=1.0)
    response = client.post("/timers/release", json={"pid": sleeper.pid, "scope_id": "step"})
    assert response.status_code == 200 and response.json()["state"] == "released"
    assert worker_node_of(client).reaper.active() == []
    published = bus.last_seq()
    step_past(client, manual_clock, timer["expiration_time"])
    # A kill, an expiry or a failure would each have been published by the step.
    assert bus.last_seq() == published
    assert sleeper.poll() is None
    assert client.get(f"/timers/{timer['id']}").json()["state"] == "released"
    again = client.post("/timers/release", json={"pid": sleeper.pid, "scope_id": "step"})
    assert again.status_code == 404


def test_delete_releases_then_409_then_404(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer = arm(client, sleeper.pid, expires_in=60)
    assert client.delete(f"/timers/{timer['id']}").json()["state"] == "released"
    assert client.delete(f"/timers/{timer['id']}").status_code == 409
    assert client.delete("/timers/999999").status_code == 404


def test_observe_only_expires_without_a_signal(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer = arm(client, sleeper.pid, expires_in=0.2, signal=0)
    body = wait_state(client, timer["id"], "expired")
    assert body["end_reason"] == "observe only"
    assert sleeper.poll() is None


def test_list_filters_and_cursor_pagination(
    client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    from tests.workers import spawn_sleeper

    a, b = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([a, b])
    ids = [arm(client, a.pid, f"s{i}", expires_in=60)["id"] for i in range(5)]
    arm(client, b.pid, "other", expires_in=60)
    client.delete(f"/timers/{ids[0]}")
    page = client.get("/timers", params={"pid": a.pid, "limit": 2}).json()
    assert [t["id"] for t in page["items"]] == ids[::-1][:2]
    seen = [t["id"] for t in page["items"]]
    while page["next"]:
        page = client.get(
            "/timers", params={"pid": a.pid, "limit": 2, "cursor": page["next"]}
        ).json()
        seen += [t["id"] for t in page["items"]]
    assert seen == ids[::-1]
    active = client.get("/timers", params={"state": "active", "pid": a.pid}).json()["items"]
    assert sorted(t["id"] for t in active) == ids[1:]
    assert [
        t["scope_id"] for t in client.get("/timers", params={"scope": "other"}).json()["items"]
    ] == ["other"]
    kinds = client.get("/events", params={"kind": "released"}).json()["items"]
    assert [e["timer_id"] for e in kinds] == [ids[0]]


def test_healthz_reports_ok_with_reaper_and_recorder(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["reaper"]["running"] is True
    assert body["recorder"]["backlog"] == 0


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert "/timers" in client.get("/openapi.json").json()["paths"]


def test_every_write_answers_exactly_the_timer_shape(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    """The writes encode their answer themselves (no second validation by FastAPI): the
    bytes must still be TimerPublic's, field for field and in its order."""
    body = {"pid": sleeper.pid, "scope_id": "shape", "expires_in": 60}
    armed = client.post("/timers", json=body)
    beat = client.post("/timers", json=body)
    released = client.post("/timers/release", json={"pid": sleeper.pid, "scope_id": "shape"})
    again = arm(client, sleeper.pid, "shape-2", expires_in=60)
    deleted = client.delete(f"/timers/{again['id']}")
    answers = [armed, beat, released, deleted]
    assert [answer.status_code for answer in answers] == [201, 200, 200, 200]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        assert list(answer.json()) == list(TimerPublic.model_fields)
        model = TimerPublic.model_validate_json(answer.content)
        assert model.model_dump_json().encode() == answer.content
    assert released.json()["state"] == "released" and released.json()["ended_at"] is not None
