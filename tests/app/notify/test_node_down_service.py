"""A real node of a fleet SIGKILLed (contract 11's ``node_down``): the other real node,
on the same real PostgreSQL database, tells its outage to a real receiver once, signed,
naming the node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.notify.fleet_nodes import fleet_nodes
from tests.app.notify.receiver import Receiver, verified
from tests.app.service_process import ServiceProcess

SECRET = "a-secret-of-32-characters-------"


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str) -> Iterator[dict[str, ServiceProcess]]:
    # Down after 1.5 s without a heartbeat (they beat every 0.5 s).
    with fleet_nodes(tmp_path, postgres_url, "--node-timeout", "1.5") as started:
        yield started


def test_a_killed_node_is_told_down_once(
    nodes: dict[str, ServiceProcess], receiver: Receiver
) -> None:
    watcher = nodes["node-a"]
    answer = httpx.post(
        watcher.url + "/channels",
        json={"name": "ops", "url": receiver.url, "events": ["node_down"], "secret": SECRET},
    )
    assert answer.status_code == 201, answer.text
    assert receiver.got == []  # both up: nothing to tell
    nodes["node-b"].crash()  # SIGKILL: it says nothing, its heartbeat stops
    (got,) = receiver.wait_for(1, timeout=20)
    assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
    body = got.json
    assert (body["kind"], body["node"]) == ("node_down", "node-b")
    assert "node node-b is down" in body["summary"]
    # node-a keeps looking (every 2 s): the same outage is not told again.
    time.sleep(4.5)
    assert len(receiver.got) == 1
    (delivery,) = httpx.get(watcher.url + "/deliveries").json()["items"]
    assert (delivery["state"], delivery["delivery_id"]) == ("delivered", got.delivery_id)
