"""The service's own conditions are told through the outbox (contract 11): a node that
goes down (once per outage, whoever sees it), events the recorder lost (once until
acknowledged, later losses folded in) and kills gone overdue (once per episode).

The overdue kill is driven on a ManualClock with a capture that blocks until the test
releases it (as tests/app/ops/test_kill_path_health.py does); the losses are the
recorder's own counters grown as a full buffer grows them. Receipts are a real HTTP
receiver's, signed."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import replace

from sqlalchemy import Engine, update

from app.db.models import Node
from app.db.nodes import register_node
from app.main import create_app
from app.notify.conditions import Conditions
from app.notify.sender import Sender
from app.service import Service
from app.settings import Settings
from app.worker_node import WorkerNode
from tests.app.notify.outbox_events import add_webhook, body_of, rows
from tests.app.notify.receiver import Receiver, verified
from tests.app.ops.test_kill_path_health import blocked_capture  # noqa: F401 - a fixture
from tests.conftest import in_process, service_of
from tests.waiting import wait_until
from tests.workers import wait_dead
from timer_core import ManualClock
from timer_core.engine.arm_request import ArmRequest

SECRET = "a-secret-of-32-characters-------"
_nodes = Node.__table__  # type: ignore[attr-defined]


def _last_seen(engine: Engine, name: str, at: float) -> None:
    with engine.begin() as connection:
        connection.execute(update(_nodes).where(_nodes.c.name == name).values(last_seen=at))


def _told(engine: Engine, kind: str) -> list[dict[str, object]]:
    return rows(engine, "SELECT * FROM notifications WHERE kind = :kind ORDER BY id", kind=kind)


def test_a_node_down_is_told_once_per_outage(backend_engine: Engine, receiver: Receiver) -> None:
    engine = backend_engine
    add_webhook(engine, receiver.url, SECRET, events=["node_down"])
    for name in ("node-a", "node-b", "retired"):
        register_node(engine, name, "test")
    now = time.time()
    _last_seen(engine, "retired", now - 7200)  # down for hours: history, not news
    silent_since = now - 20
    _last_seen(engine, "node-b", silent_since)
    watcher = Conditions(engine, "node-a", 15.0, dict)
    hub = Conditions(engine, "hub", 15.0, dict)
    assert watcher.nodes_down()
    assert not watcher.nodes_down()  # the same outage
    assert not hub.nodes_down()  # another observer of it: the same row
    (told,) = _told(engine, "node_down")
    assert (told["node"], told["job_id"], told["uid"]) == ("node-b", None, None)
    assert body_of(told)["detail"]["last_seen"] == silent_since

    sender = Sender(engine, "node-a", "https://timers.example")
    assert sender.step() == 1
    (got,) = receiver.got
    assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
    body = got.json
    assert (body["kind"], body["node"], body["url"]) == (
        "node_down",
        "node-b",
        "https://timers.example/ui",
    )
    assert body["summary"].startswith("node node-b is down: no heartbeat for over 15s")

    # node-b beats again, then falls silent again: a new outage, told again.
    _last_seen(engine, "node-b", time.time())
    assert not watcher.nodes_down()
    _last_seen(engine, "node-b", time.time() - 30)
    assert watcher.nodes_down()
    assert [row["node"] for row in _told(engine, "node_down")] == ["node-b", "node-b"]
    assert sender.step() == 1
    assert len({got.delivery_id for got in receiver.got}) == 2


def test_lost_events_are_told_once_until_acknowledged(
    settings: Settings, receiver: Receiver
) -> None:
    with in_process(create_app(replace(settings, node_name="node-a"))) as client:
        service = service_of(client)
        add_webhook(service.engine, receiver.url, SECRET, events=["loss"])
        service.recorder.dropped += 3  # as a full buffer does
        (got,) = receiver.wait_for(1)
        assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
        body = got.json
        assert (body["kind"], body["node"]) == ("loss", "node-a")
        assert body["url"].endswith("/losses")
        assert (
            "node node-a lost 3 events (3 events dropped by a full recorder buffer)"
            in (body["summary"])
        )

        service.recorder.rejected += 2  # more lost before anyone acknowledged: folded in
        assert wait_until(lambda: service.losses.unacknowledged() == 5)
        assert wait_until(lambda: _told(service.engine, "loss")[0]["folded"] == 1)
        (told,) = _told(service.engine, "loss")
        assert body_of(told)["detail"]["lost"] == 5

        assert client.post("/losses/acknowledge").json() == {"acknowledged": 5}
        service.recorder.dropped += 1  # a loss after the acknowledgement: told anew
        assert len(receiver.wait_for(2)) == 2
        assert "lost 1 event (1 events dropped" in receiver.got[1].json["summary"]
        assert [row["folded"] for row in _told(service.engine, "loss")] == [1, 0]


def test_an_overdue_kill_is_told_once_per_episode(
    settings: Settings,
    sleeper: subprocess.Popen[bytes],
    blocked_capture: threading.Event,  # noqa: F811 - the fixture
    receiver: Receiver,
) -> None:
    clock = ManualClock(start_monotonic=time.monotonic(), start_time=time.time())
    app = create_app(
        replace(settings, stack_budget=60.0, overdue_margin=1.0, node_name="node-a"), clock=clock
    )
    service: Service = app.state.service
    node = service.keeper
    assert isinstance(node, WorkerNode)
    node.on_stall = lambda: None  # the loop stamps its runs on the manual clock
    with in_process(app):
        add_webhook(service.engine, receiver.url, SECRET, events=["overdue"])
        node.reaper.acquire(ArmRequest(sleeper.pid, "stuck", clock.time() + 1))
        clock.advance(1)
        assert blocked_capture.started.wait(10)  # type: ignore[attr-defined]
        clock.advance(61.5)  # the kill waits on its capture past budget and margin
        (got,) = receiver.wait_for(1)
        assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
        body = got.json
        assert (body["kind"], body["node"]) == ("overdue", "node-a")
        assert "node-a: 1 due kill not sent within 61s of their deadline" in body["summary"]
        # Still overdue at the sender's next looks: the same episode, not told again.
        conditions = service.sender.conditions
        assert isinstance(conditions, Conditions)
        assert not conditions.overdue()
        blocked_capture.set()  # the kill goes ahead: the episode ends
        assert wait_dead(sleeper) == -9
        assert wait_until(lambda: service.kill_report()["overdue"] == 0)
        assert not conditions.overdue()
        assert len(_told(service.engine, "overdue")) == 1
        assert len(receiver.got) == 1
