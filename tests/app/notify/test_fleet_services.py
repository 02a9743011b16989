"""Two real ``timer-service`` nodes on one real PostgreSQL database (contract 9), both
running their sender (contract 11): kills on both nodes are each told exactly once, by
one of the two, whichever node recorded them."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.notify.fleet_nodes import fleet_nodes
from tests.app.notify.receiver import Receiver, verified
from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

SECRET = "a-secret-of-32-characters-------"
KILLS_PER_NODE = 4


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str) -> Iterator[dict[str, ServiceProcess]]:
    with fleet_nodes(tmp_path, postgres_url) as started:
        yield started


def test_each_kill_of_a_fleet_is_told_once(
    nodes: dict[str, ServiceProcess], receiver: Receiver
) -> None:
    first = nodes["node-a"]
    answer = httpx.post(
        first.url + "/channels",
        json={"name": "ops", "url": receiver.url, "events": ["kill"], "secret": SECRET},
    )
    assert answer.status_code == 201, answer.text
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for node in nodes.values():
            for number in range(KILLS_PER_NODE):
                worker = spawn_sleeper()
                workers.append(worker)
                armed = httpx.post(
                    node.url + "/timers",
                    json={"pid": worker.pid, "scope_id": f"s{number}", "expires_in": 0.3},
                )
                assert armed.status_code == 201, armed.text
        for worker in workers:
            assert_sigkilled(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    total = KILLS_PER_NODE * len(nodes)
    got = receiver.wait_for(total)
    assert wait_until(
        lambda: (
            len(httpx.get(first.url + "/deliveries", params={"state": "delivered"}).json()["items"])
            == total
        )
    )
    assert len(receiver.got) == total
    counts = collections.Counter(item.delivery_id for item in got)
    assert set(counts.values()) == {1}
    assert all(
        verified(SECRET, item.headers["x-timer-service-signature"], item.body) for item in got
    )
    assert collections.Counter(item.json["node"] for item in got) == {
        "node-a": KILLS_PER_NODE,
        "node-b": KILLS_PER_NODE,
    }
