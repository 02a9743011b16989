"""The outbox on both databases: a real recorder writes the notifications with the
events that cause them, and a real sender delivers them to a real receiver on
loopback, which checks their signatures (contract 11)."""

from __future__ import annotations

import json
import socket

from sqlalchemy import Engine

from app.notify.outbox import KILLS_TOLD_PER_UID
from app.notify.sender import Sender
from tests.app.notify.outbox_events import (
    add_webhook,
    body_of,
    hung_job,
    lone_kill,
    recorder_for,
    rows,
)
from tests.app.notify.receiver import Receiver, verified

SECRET = "a-secret-of-32-characters-------"


def sender_of(engine: Engine, max_attempts: int = 10) -> Sender:
    return Sender(
        engine, "node-a", "http://timers.example:8000", backoff_base=0.0, max_attempts=max_attempts
    )


def test_a_hung_job_is_one_notification_with_its_kills_folded_in(backend_engine: Engine) -> None:
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)
    written = rows(backend_engine, "SELECT * FROM notifications")
    assert len(written) == 1, written
    (notification,) = written
    assert notification["kind"] == "incident"
    assert notification["key"] == f"incident:{notification['incident_id']}"
    # The four kills of the job joined its incident: folded, not told again.
    assert notification["folded"] == 4
    assert body_of(notification)["timer"]["job_id"] == "job-1"


def test_the_incident_reaches_the_receiver_once_signed(
    backend_engine: Engine, receiver: Receiver
) -> None:
    channel = add_webhook(backend_engine, receiver.url, SECRET)
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)
    sender = sender_of(backend_engine)
    assert sender.step() == 1
    assert sender.step() == 0  # nothing twice
    (got,) = receiver.got
    assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
    assert not verified(
        "another-secret-of-32-characters-", got.headers["x-timer-service-signature"], got.body
    )
    body = got.json
    assert body["kind"] == "incident"
    assert body["job_id"] == "job-1"
    assert body["url"] == f"http://timers.example:8000/ui/incidents/{body['incident']['id']}"
    assert "job job-1 hung on node-a" in body["summary"]
    assert body["incident"]["events_folded"] == 4
    assert set(body) >= {"id", "kind", "at", "node", "job_id", "summary", "url", "incident"}
    (delivery,) = rows(backend_engine, "SELECT * FROM deliveries")
    assert delivery["channel_id"] == channel
    assert delivery["state"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["delivery_id"] == got.delivery_id
    assert sender.outcomes["delivered"] == 1


def test_a_lone_kill_is_told_with_a_link_to_its_timer(
    backend_engine: Engine, receiver: Receiver
) -> None:
    add_webhook(backend_engine, receiver.url, SECRET)
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 77, scope="eval")
    sender_of(backend_engine).step()
    (got,) = receiver.got
    body = got.json
    assert body["kind"] == "kill"
    assert body["timer"]["id"] == 77
    assert body["url"].endswith("/ui/timers/77")
    assert "killed pid 100" in body["summary"] and "'eval'" in body["summary"]


def test_a_retry_carries_the_same_delivery_id(backend_engine: Engine, receiver: Receiver) -> None:
    add_webhook(backend_engine, receiver.url, SECRET)
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 5)
    receiver.statuses = [503, 429]
    sender = sender_of(backend_engine)
    for _ in range(3):
        sender.step()
    assert [got.delivery_id for got in receiver.got] == [receiver.got[0].delivery_id] * 3
    (delivery,) = rows(backend_engine, "SELECT * FROM deliveries")
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 3)


def test_a_refusal_fails_at_once_and_a_dead_receiver_is_given_up(
    backend_engine: Engine, receiver: Receiver
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}/hook"  # nothing listens
    refusing = add_webhook(backend_engine, receiver.url, SECRET)
    gone = add_webhook(backend_engine, dead, SECRET)
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 5)
    receiver.statuses = [404]
    sender = sender_of(backend_engine, max_attempts=3)
    for _ in range(4):
        sender.step()
    states = {
        row["channel_id"]: (row["state"], row["attempts"], row["last_error"])
        for row in rows(backend_engine, "SELECT * FROM deliveries")
    }
    assert states[refusing] == ("failed", 1, "HTTP 404")
    state, attempts, error = states[gone]
    assert (state, attempts) == ("gave_up", 3)
    assert "ConnectError" in error and dead not in error
    assert len(receiver.got) == 1  # the 404 was not tried again
    assert sender.outcomes["failed"] == 1 and sender.outcomes["gave_up"] == 1


def test_a_redirect_to_another_host_is_not_followed(
    backend_engine: Engine, receiver: Receiver
) -> None:
    from tests.app.notify.receiver import start_receiver

    other = start_receiver()
    try:
        receiver.statuses = [307]
        receiver.headers_out = {"location": other.url.replace("127.0.0.1", "localhost")}
        add_webhook(backend_engine, receiver.url, SECRET)
        recorder, _ = recorder_for(backend_engine)
        lone_kill(recorder, 1, 5)
        sender_of(backend_engine).step()
        assert other.got == []
        (delivery,) = rows(backend_engine, "SELECT * FROM deliveries")
        assert delivery["state"] == "failed"
        assert "another host" in delivery["last_error"]
    finally:
        other.server.shutdown()
        other.server.server_close()


def test_only_the_channels_that_want_it_get_it(backend_engine: Engine, receiver: Receiver) -> None:
    add_webhook(backend_engine, receiver.url + "/other-job", SECRET, match={"job": "job-2"})
    add_webhook(backend_engine, receiver.url + "/unkillable", SECRET, events=["unkillable"])
    mine = add_webhook(backend_engine, receiver.url + "/uid", SECRET, match={"uid": 1234})
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)
    sender_of(backend_engine).step()
    assert [got.path for got in receiver.got] == ["/hook/uid"]
    assert [row["channel_id"] for row in rows(backend_engine, "SELECT * FROM deliveries")] == [mine]
    assert json.loads(receiver.got[0].body)["kind"] == "incident"


def test_an_unkillable_worker_is_told_once_with_where_it_waits(
    backend_engine: Engine, receiver: Receiver
) -> None:
    import dataclasses

    from app.notify.channels import ChannelCreate
    from app.notify.notify_store import add_channel
    from tests.sample_events import changed, event, timer_of
    from timer_core import EventKind, TimerState
    from timer_core.engine.event_details import Unkillable

    given = ChannelCreate(name="stuck", url=receiver.url, events=["unkillable"])
    add_channel(backend_engine, given, SECRET, "test")
    recorder, _ = recorder_for(backend_engine)
    armed = changed(event(1, EventKind.ACQUIRED, 31), uid=1234, scope_id="io")
    recorder(armed)
    dead = dataclasses.replace(timer_of(armed), state=TimerState.KILLED)
    stuck = Unkillable(12.3, "D", "disk sleep", "fuse_wait")
    recorder(dataclasses.replace(armed, seq=2, kind=EventKind.UNKILLABLE, timer=dead, detail=stuck))
    gone = Unkillable(40.0, exited=True)
    recorder(dataclasses.replace(armed, seq=3, kind=EventKind.UNKILLABLE, timer=dead, detail=gone))
    recorder.flush()
    (notification,) = rows(backend_engine, "SELECT * FROM notifications")
    assert (notification["kind"], notification["folded"]) == ("unkillable", 1)
    sender_of(backend_engine).step()
    (got,) = receiver.got
    assert got.json["kind"] == "unkillable"
    assert got.json["summary"] == (
        "pid 100 on node-a survived its SIGKILL for 12s: state D in fuse_wait; "
        "it exited 40s after the SIGKILL"
    )


def test_a_straggler_is_told_with_a_link_to_its_job(
    backend_engine: Engine, receiver: Receiver
) -> None:
    import dataclasses

    from app.notify.channels import ChannelCreate
    from app.notify.notify_store import add_channel
    from tests.sample_events import changed, event, timer_of
    from timer_core import EventKind, TimerState
    from timer_core.engine.event_details import Straggler

    given = ChannelCreate(name="slow", url=receiver.url, events=["straggler"])
    add_channel(backend_engine, given, SECRET, "test")
    add_webhook(backend_engine, receiver.url + "/kills", SECRET)  # kills and incidents only
    recorder, _ = recorder_for(backend_engine)
    armed = changed(
        event(1, EventKind.ACQUIRED, 8), uid=1234, job_id="llama/7b", rank=3, scope_id="compute"
    )
    recorder(armed)
    released = dataclasses.replace(timer_of(armed), state=TimerState.RELEASED)
    recorder(dataclasses.replace(armed, seq=2, kind=EventKind.RELEASED, timer=released))
    slow = Straggler(3, 1.31, 20, 1.2)
    recorder(
        dataclasses.replace(armed, seq=3, kind=EventKind.STRAGGLER, timer=released, detail=slow)
    )
    recorder.flush()
    sender_of(backend_engine).step()
    (got,) = receiver.got
    assert got.path == "/hook"
    assert got.json["kind"] == "straggler"
    assert got.json["summary"] == (
        "rank 3 of job llama/7b on node-a is 1.31x slower than the other ranks at scope "
        "'compute' (its last 20 holds)"
    )
    assert got.json["url"] == "http://timers.example:8000/ui/jobs/llama%2F7b"


def test_retention_forgets_what_is_done_and_keeps_what_is_not(
    backend_engine: Engine, receiver: Receiver
) -> None:
    import time

    from app.notify.channels import Match
    from app.notify.silences import SilenceCreate, add_silence

    add_webhook(backend_engine, receiver.url, SECRET)
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 5)
    lone_kill(recorder, 3, 6)
    receiver.statuses = [200, 503]  # one is delivered, the other still to retry
    sender = sender_of(backend_engine)
    sender.step()
    (waiting,) = rows(
        backend_engine, "SELECT notification_id FROM deliveries WHERE state = 'pending'"
    )
    now = time.time()
    add_silence(
        backend_engine,
        SilenceCreate(match=Match(job="j"), ends_at=now + 60, comment="short"),
        "test",
    )
    sender.prune(now + 3600)  # everything is older than the cutoff
    (pending,) = rows(backend_engine, "SELECT state FROM deliveries")
    assert pending["state"] == "pending"
    (kept,) = rows(backend_engine, "SELECT id FROM notifications")
    assert kept["id"] == waiting["notification_id"]
    assert rows(backend_engine, "SELECT id FROM silences") == []


def test_kills_of_a_job_with_no_incident_are_told_once(backend_engine: Engine) -> None:
    """Stack capture off: a job's kills open no incident; the first is told, the others
    within the incident window are folded into it."""
    import time

    from tests.app.notify.outbox_events import job_event, killed
    from timer_core import EventKind

    recorder, _ = recorder_for(backend_engine)
    now = time.time()
    armed = [job_event(rank + 1, EventKind.ACQUIRED, rank, "no-capture", now) for rank in range(3)]
    for made in armed:
        recorder(made)
    for number, made in enumerate(armed):
        recorder(killed(made, 10 + number, now + 1 + number))
        recorder.flush()
    (notification,) = rows(backend_engine, "SELECT * FROM notifications")
    assert (notification["kind"], notification["folded"]) == ("kill", 2)
    assert notification["job_id"] == "no-capture"


def test_one_uids_kills_past_its_rate_are_told_as_one(
    backend_engine: Engine, receiver: Receiver
) -> None:
    """A user whose unlabelled workers die in a loop, each kill naming a scope it chose:
    10 kills a minute are told one by one, the rest of the minute's as one notification
    that counts them; another uid's kill is still told."""
    import time

    from tests.app.notify.outbox_events import killed
    from tests.sample_events import changed, event
    from timer_core import EventKind

    add_webhook(backend_engine, receiver.url, SECRET)
    recorder, _ = recorder_for(backend_engine)
    middle = (time.time() // 60) * 60 - 30  # mid-minute: all 26 kills in one minute
    kills = KILLS_TOLD_PER_UID + 15
    for number in range(kills + 1):
        uid = 1234 if number < kills else 4321
        armed = changed(
            event(2 * number + 1, EventKind.ACQUIRED, 100 + number),
            at=middle + number * 0.1,
            scope_id=f"<pwned {number}> call +1-555-0100",
            uid=uid,
        )
        recorder(armed)
        recorder(killed(armed, 2 * number + 2, middle + number * 0.1 + 0.05))
    recorder.flush()
    told = rows(backend_engine, "SELECT key, uid, folded FROM notifications ORDER BY id")
    assert [row["key"] for row in told][:KILLS_TOLD_PER_UID] == [
        f"kill:{100 + number}" for number in range(KILLS_TOLD_PER_UID)
    ]
    minute = int((middle + KILLS_TOLD_PER_UID * 0.1) // 60)
    assert [(row["key"], row["folded"]) for row in told[KILLS_TOLD_PER_UID:]] == [
        (f"kills-of-uid:1234:{minute}", 14),
        (f"kill:{100 + kills}", 0),
    ]
    sender_of(backend_engine).step()
    summaries = [got.json["summary"] for got in receiver.wait_for(KILLS_TOLD_PER_UID + 2)]
    assert len(summaries) == KILLS_TOLD_PER_UID + 2
    assert sum("<pwned" in summary for summary in summaries) == KILLS_TOLD_PER_UID + 2
    (folded,) = [summary for summary in summaries if summary.startswith("uid 1234 had")]
    assert "more than 10 kills in a minute on node-a" in folded
    assert "15 so far" in folded


def test_roots_kills_are_not_folded_by_rate(backend_engine: Engine) -> None:
    recorder, _ = recorder_for(backend_engine)
    for number in range(KILLS_TOLD_PER_UID + 2):
        lone_kill(recorder, 2 * number + 1, number + 1, uid=0)
    told = rows(backend_engine, "SELECT key, folded FROM notifications ORDER BY id")
    assert [(row["key"], row["folded"]) for row in told] == [
        (f"kill:{number + 1}", 0) for number in range(KILLS_TOLD_PER_UID + 2)
    ]
