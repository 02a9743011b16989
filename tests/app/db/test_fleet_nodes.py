"""Several services on one database (contract 9), here one SQLite file: each node takes
its own number and makes ids no other node makes, beats, and shows as down once it
stops; a hub serves the fleet's reads and refuses timer writes with 409."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db.timer_ids import node_of
from app.hub import NoTimersHere
from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process, service_of, worker_node_of
from tests.waiting import wait_until


@pytest.fixture
def fleet(settings: Settings) -> Iterator[dict[str, TestClient]]:
    """Nodes a and b and a hub, on one database; a node is down 1 s after its last beat."""
    with ExitStack() as stack:
        clients = {
            name: stack.enter_context(
                in_process(
                    create_app(
                        replace(settings, node_name=name, node_timeout=1.0, hub=name == "hub")
                    )
                )
            )
            for name in ("a", "b", "hub")
        }
        yield clients


def arm(client: TestClient, pid: int, **extra: Any) -> dict[str, Any]:
    response = client.post("/timers", json={"pid": pid, "scope_id": "s", "expires_in": 60, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def nodes(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/nodes")
    assert response.status_code == 200, response.text
    return {node["name"]: node for node in response.json()["items"]}


def test_each_node_makes_ids_no_other_node_makes(
    fleet: dict[str, TestClient], sleepers: list[subprocess.Popen[bytes]]
) -> None:
    from tests.workers import spawn_sleeper

    for _ in range(4):
        sleepers.append(spawn_sleeper())
    made = {
        name: [arm(fleet[name], worker.pid)["id"] for worker in sleepers] for name in ("a", "b")
    }
    every_id = made["a"] + made["b"]
    assert len(set(every_id)) == 8
    assert len({node_of(i) for i in made["a"]}) == 1
    assert {node_of(i) for i in made["a"]}.isdisjoint({node_of(i) for i in made["b"]})
    # Every node, and the hub, answers for the whole fleet, and the node= filter works.
    for name in ("a", "b", "hub"):
        listed = fleet[name].get("/timers", params={"limit": 100}).json()["items"]
        assert {t["id"] for t in listed} == set(every_id)
        assert {
            t["id"] for t in fleet[name].get("/timers", params={"node": "b"}).json()["items"]
        } == set(made["b"])
        events = fleet[name].get("/events", params={"node": "a", "kind": "acquired"}).json()
        assert {e["timer_id"] for e in events["items"]} == set(made["a"])
    # Newest first across nodes: b armed after a.
    listed = [t["id"] for t in fleet["hub"].get("/timers").json()["items"]]
    assert listed == sorted(every_id, reverse=True)


def test_nodes_are_up_and_a_stopped_node_is_down(fleet: dict[str, TestClient]) -> None:
    seen = nodes(fleet["hub"])
    assert set(seen) == {"a", "b"}  # the hub arms nothing: not a node of the fleet
    assert all(node["status"] == "up" for node in seen.values())
    assert all(node["version"] == "0.1.0" for node in seen.values())
    worker_node_of(fleet["b"]).node_beat.stop()  # as if b had died: no more beats
    assert wait_until(lambda: nodes(fleet["a"])["b"]["status"] == "down", 10)
    assert nodes(fleet["hub"])["a"]["status"] == "up"
    registry = service_of(fleet["a"]).metrics.registry
    assert registry.get_sample_value("timer_nodes", {"status": "down"}) == 1
    assert registry.get_sample_value("timer_nodes", {"status": "up"}) == 1


def test_the_hub_refuses_timer_writes_with_409_and_reads_everything(
    fleet: dict[str, TestClient], sleeper: subprocess.Popen[bytes]
) -> None:
    hub = fleet["hub"]
    armed = arm(fleet["a"], sleeper.pid)
    for method, path, body in (
        ("POST", "/timers", {"pid": sleeper.pid, "scope_id": "s", "expires_in": 5}),
        ("POST", "/timers/release", {"pid": sleeper.pid, "scope_id": "s"}),
        ("DELETE", f"/timers/{armed['id']}", None),
    ):
        response = hub.request(method, path, json=body)
        assert response.status_code == 409, response.text
        assert "worker's own node" in response.json()["detail"]
    assert hub.get(f"/timers/{armed['id']}").json()["state"] == "active"
    # Another node cannot release it either (its engine holds it not): it says where.
    elsewhere = fleet["b"].delete(f"/timers/{armed['id']}")
    assert elsewhere.status_code == 409 and "armed on node 'a'" in elsewhere.json()["detail"]
    health = hub.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    with pytest.raises(NoTimersHere):  # no reaper at all: a hub keeps no timers
        service_of(hub).timers_here()
    assert health.json()["hub"] is True
    # No reaper gauges on a hub: its "reaper down" would page someone for nothing.
    assert service_of(hub).metrics.registry.get_sample_value("timer_reaper_up") is None
    assert service_of(fleet["a"]).metrics.registry.get_sample_value("timer_reaper_up") == 1
