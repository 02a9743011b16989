"""Two nodes share one real PostgreSQL database and both run a sender (contract 11):
each delivery is sent by exactly one of them, and one that a node took and then died
with is sent by the other once its lease runs out, with the same delivery id."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.db.database import make_engine
from app.notify.sender import Sender
from tests.app.notify.outbox_events import add_webhook, lone_kill, recorder_for, rows
from tests.app.notify.receiver import Receiver
from tests.conftest import migrated_engine

SECRET = "a-secret-of-32-characters-------"
NODES = ("node-a", "node-b")
KILLS = 40


@pytest.fixture
def engines(postgres_url: str) -> Iterator[dict[str, Engine]]:
    """Each node's own engine (its own pool) on the one database."""
    migrated_engine(postgres_url).dispose()
    made = {node: make_engine(postgres_url) for node in NODES}
    yield made
    for engine in made.values():
        engine.dispose()


def test_two_nodes_send_each_delivery_once(engines: dict[str, Engine], receiver: Receiver) -> None:
    engine = engines["node-a"]
    add_webhook(engine, receiver.url, SECRET)
    recorder, _ = recorder_for(engine)
    for number in range(KILLS):
        # A uid each: one uid's kills past 10 a minute would be folded into one.
        lone_kill(recorder, 2 * number + 1, number + 1, uid=2000 + number)
    senders = [Sender(engines[node], node, "http://x", backoff_base=0.0) for node in NODES]
    barrier = threading.Barrier(len(senders))
    sent: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(sender: Sender) -> None:
        try:
            barrier.wait(30)
            total = 0
            # Small claims, so that the two nodes interleave over the whole backlog.
            for _ in range(KILLS):
                sender.fan_out()
                claimed = sender.claim(3)
                sender.send_claimed(claimed)
                total += len(claimed)
            sent[sender.node] = total
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    counts = collections.Counter(got.delivery_id for got in receiver.got)
    assert len(counts) == KILLS
    assert set(counts.values()) == {1}, counts.most_common(3)
    assert sum(sent.values()) == KILLS
    assert all(sent.values()), sent  # both took part (SKIP LOCKED, not one waiting)
    assert {row["state"] for row in rows(engine, "SELECT state FROM deliveries")} == {"delivered"}


@pytest.mark.parametrize("died", ["before sending", "after sending"])
def test_a_node_that_dies_mid_send_leaves_it_to_the_other(
    engines: dict[str, Engine], receiver: Receiver, died: str
) -> None:
    engine = engines["node-a"]
    add_webhook(engine, receiver.url, SECRET)
    recorder, _ = recorder_for(engine)
    lone_kill(recorder, 1, 1)
    lease = 0.5
    first, second = (Sender(engines[node], node, "http://x", lease=lease) for node in NODES)
    first.fan_out()
    (taken,) = first.claim(10)
    if died == "after sending":
        # The request went out, then the node died before it could write the outcome.
        from app.notify.delivery import deliver
        from app.notify.notification_body import notification_body

        deliver(
            taken.url, taken.secret, taken.delivery_id, notification_body(taken.notification, "x")
        )
    # node-a is gone: while its lease holds, node-b leaves the delivery alone.
    assert second.claim(10) == []
    time.sleep(lease + 0.1)
    assert second.step() == 1
    ids = [got.delivery_id for got in receiver.got]
    assert ids == [taken.delivery_id] * (2 if died == "after sending" else 1)
    (delivery,) = rows(engine, "SELECT * FROM deliveries")
    assert delivery["state"] == "delivered"
    # Were node-a to come back and finish, its outcome would not overwrite node-b's.
    assert not first._update(taken, "gave_up", "late", 1, None)
    (delivery,) = rows(engine, "SELECT * FROM deliveries")
    assert delivery["state"] == "delivered"


def test_twenty_rounds_of_a_node_dying_mid_send(
    engines: dict[str, Engine], receiver: Receiver
) -> None:
    """Each round a notification is written; one node (chosen at random) takes it and
    dies, before or after its request went out; the other takes over at the lease's
    end. Every delivery ends delivered once in the outbox, and the receiver sees only
    its one delivery id (twice when the dead node had sent it: dropped by that id)."""
    import random

    from app.notify.delivery import deliver
    from app.notify.notification_body import notification_body

    engine = engines["node-a"]
    add_webhook(engine, receiver.url, SECRET)
    recorder, _ = recorder_for(engine)
    chance = random.Random(23)
    lease = 0.2
    sent_before_dying = 0
    taken_ids = []
    for number in range(20):
        # A uid each: one uid's kills past 10 a minute would be folded into one.
        lone_kill(recorder, 2 * number + 1, number + 1, uid=2000 + number)
        dying, living = chance.sample(NODES, 2)
        dead = Sender(engines[dying], dying, "http://x", lease=lease)
        heir = Sender(engines[living], living, "http://x", lease=lease)
        dead.fan_out()
        (taken,) = dead.claim(10)
        taken_ids.append(taken.delivery_id)
        if chance.random() < 0.5:
            body = notification_body(taken.notification, "http://x")
            assert deliver(taken.url, taken.secret, taken.delivery_id, body).delivered
            sent_before_dying += 1
        assert heir.claim(10) == []  # the lease holds
        time.sleep(lease + 0.05)
        assert heir.step() == 1
    counts = collections.Counter(got.delivery_id for got in receiver.got)
    assert set(counts) == set(taken_ids)
    assert sum(counts.values()) == 20 + sent_before_dying
    outcomes = rows(engine, "SELECT delivery_id, state, attempts FROM deliveries")
    assert len(outcomes) == 20
    assert {(row["state"], row["attempts"]) for row in outcomes} == {("delivered", 1)}
    assert 0 < sent_before_dying < 20  # both ways of dying were met
