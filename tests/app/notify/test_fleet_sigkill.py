"""Two real ``timer-service`` nodes on one real PostgreSQL database, the sending one
SIGKILLed mid-send, round after round (contract 11): each notification is still sent
exactly once.

"Sent exactly once" here means what a receiver that drops repeats by delivery id
sees (the contract's at-least-once delivery):

- each notification has exactly one delivery (one delivery id) per channel, and it
  ends ``delivered``;
- a request the receiver acknowledged is never sent again: a delivery id reaches the
  receiver once, or twice exactly when the first request was cut by the kill (the
  dead node's request, answered to nobody, and the heir's, answered), never more, and
  never under another id.

Each round, the receiver holds its answers back while a burst of kills is told; the
node with requests in flight is frozen (SIGSTOP, so which connections are its own is
read before it can open another), then SIGKILLed. Its requests in flight, and the
deliveries it had claimed but not begun, are left under its lease (``--notify-lease``
2 s here, 60 s by default); the other node sends them after it, with their ids (or
the dead node's restart does, at its start, if it is up first: it holds the node's
lock, so it knows its dead self's leases are free). Real processes make a round cost
seconds (a restart alone takes several on a busy machine), so the rounds are few and
each holds many kills: ``ROUNDS`` kills of a node, each cutting several sends at once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import text

from app.db.database import make_engine
from app.notify.outbox import KILLS_TOLD_PER_UID
from tests.app.notify.fleet_nodes import fleet_nodes
from tests.app.notify.receiver import Received, Receiver, verified
from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until
from tests.workers import assert_sigkilled

SECRET = "a-secret-of-32-characters-------"
ROUNDS = 6
assert ROUNDS < KILLS_TOLD_PER_UID  # each uid's kills, one per round, are each told
BURST = 10  # kills told per round: more than a node's four sends at once
LEASE = "2"
FIRST_UID = 61000  # the workers' uids: no user's, so each has none but this test's


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str) -> Iterator[dict[str, ServiceProcess]]:
    with fleet_nodes(
        tmp_path, postgres_url, "--notify-lease", LEASE, "--no-capture-stacks"
    ) as started:
        yield started


def _ports_to(process: subprocess.Popen[bytes], port: int) -> set[int]:
    """The local ports of ``process``'s connections to the receiver."""
    return {
        connection.laddr.port
        for connection in psutil.Process(process.pid).net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port
    }


def _burst(node: ServiceProcess) -> None:
    """``BURST`` real workers, each killed by its own timer on ``node``. Each of a
    burst runs as a uid of its own: one uid's kills are told one by one only up to a
    rate (``KILLS_TOLD_PER_UID`` a minute), and this test counts notifications."""
    workers = [
        subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "600"]
        )
        for uid in range(FIRST_UID, FIRST_UID + BURST)
    ]
    try:
        for number, worker in enumerate(workers):
            armed = httpx.post(
                node.url + "/timers",
                json={"pid": worker.pid, "scope_id": f"s{number}", "expires_in": 0.2},
            )
            assert armed.status_code == 201, armed.text
        for worker in workers:
            assert_sigkilled(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_each_notification_is_sent_once_while_sending_nodes_are_killed(
    nodes: dict[str, ServiceProcess], receiver: Receiver, postgres_url: str
) -> None:
    names = sorted(nodes)
    answer = httpx.post(
        nodes[names[0]].url + "/channels",
        json={"name": "ops", "url": receiver.url, "events": ["kill"], "secret": SECRET},
    )
    assert answer.status_code == 201, answer.text
    cut: set[str] = set()
    for number in range(ROUNDS):
        start = len(receiver.got)
        receiver.hold()
        # The node that records the kills is woken at once; the other polls and may
        # take some: the victim is whichever has requests in flight (this one first).
        _burst(nodes[names[number % 2]])
        told = (number + 1) * BURST
        # Every kill is recorded (with its notification) before a node is killed: a
        # kill whose record dies with its node was never known, so never told.
        assert wait_until(
            functools.partial(_reached, postgres_url, "notifications", told), timeout=15
        )
        assert wait_until(functools.partial(_in_flight, receiver, start + 4), timeout=15)
        processes = {name: node.process for name, node in nodes.items()}
        victim = max(
            names,
            key=lambda name: (
                len(_ports_to(processes[name], receiver.port)),  # type: ignore[arg-type]
                name == names[number % 2],
            ),
        )
        frozen = processes[victim]
        assert frozen is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        ports = _ports_to(frozen, receiver.port)
        nodes[victim].crash()  # SIGKILL
        time.sleep(0.2)  # what it wrote before it froze is read
        with receiver.lock:
            in_flight = [got for got in receiver.got[start:] if got.port in ports]
        assert in_flight, f"round {number}: {victim} was not killed mid-send"
        cut |= {got.delivery_id for got in in_flight}
        receiver.release()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # Restarted while the other node waits out the lease: a restart takes
            # seconds here, and sends what its dead self held if it is up first.
            restarted = pool.submit(nodes[victim].start)
            assert wait_until(
                functools.partial(_reached, postgres_url, "delivered", told), timeout=30
            ), (
                f"round {number}: {_delivered(postgres_url)} of {told} delivered: "
                f"{_pending(postgres_url)}"
            )
            restarted.result()
    got = list(receiver.got)
    _assert_once_each(got, cut, postgres_url, ROUNDS * BURST)


def _reached(url: str, what: str, count: int) -> bool:
    """``count`` notifications written, or ``count`` deliveries delivered."""
    if what == "notifications":
        return _count(url, "notifications") == count
    return _delivered(url) == count


def _in_flight(receiver: Receiver, count: int) -> bool:
    return len(receiver.got) >= count


def _delivered(url: str) -> int:
    return _count(url, "deliveries", "delivered")


def _count(url: str, table: str, state: str | None = None) -> int:
    engine = make_engine(url)
    where = " WHERE state = :state" if state else ""
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(f"SELECT count(*) FROM {table}{where}"), {"state": state}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _pending(url: str) -> list[tuple[object, ...]]:
    """The deliveries not delivered yet (what a failure shows)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT delivery_id, state, attempts, next_at, lease_until, leased_by,"
                    " last_error FROM deliveries WHERE state != 'delivered'"
                )
            ).all()
    finally:
        engine.dispose()
    return [(*row, time.time()) for row in rows]


def _assert_once_each(got: list[Received], cut: set[str], url: str, told: int) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT n.id, d.delivery_id, d.state FROM notifications n"
                    " JOIN deliveries d ON d.notification_id = n.id"
                )
            ).all()
            notifications = connection.execute(
                text("SELECT count(*) FROM notifications")
            ).scalar_one()
    finally:
        engine.dispose()
    assert notifications == told
    assert len(rows) == told  # one delivery (one id) per notification
    assert {row.state for row in rows} == {"delivered"}
    ids = {row.delivery_id: row.id for row in rows}
    receipts = collections.Counter(item.delivery_id for item in got)
    assert set(receipts) == set(ids)
    assert {delivery: count for delivery, count in receipts.items() if count != 1} == dict.fromkeys(
        cut, 2
    )
    # Under its one id, each receipt carries its own notification, signed.
    assert all(ids[item.delivery_id] == item.json["id"] for item in got)
    assert all(
        verified(SECRET, item.headers["x-timer-service-signature"], item.body) for item in got
    )
