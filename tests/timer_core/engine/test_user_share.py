"""Each user's rate of arms and heartbeats (timer_core.engine.user_share), on a
ManualClock: the burst, then the rate; every source refused alike (the FIFO's and the
queue's requests go through ``apply``, as here); releases never refused; a refusal
written once a second per uid, every one counted; root and the service's uid exempt."""

from __future__ import annotations

import os

import pytest

from timer_core import Reaper, RefusedError, TimerEvent
from timer_core.engine import EventKind
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.clock import ManualClock
from timer_core.engine.user_share import HISTORY_FULL, RATE, UserShare

UID = 1001


def test_a_uid_gets_its_burst_then_its_rate() -> None:
    clock = ManualClock()
    share = UserShare(clock.monotonic)
    share.limit_rate(2.0, burst=4)
    for _ in range(4):
        share.check(UID)
    with pytest.raises(RefusedError) as refused:
        share.check(UID)
    assert refused.value.kind == "limit"
    assert refused.value.retry_after == pytest.approx(0.5)
    share.check(UID + 1)  # another user's bucket is its own
    clock.advance(0.5)  # one token back
    share.check(UID)
    with pytest.raises(RefusedError):
        share.check(UID)
    clock.advance(60)  # full again, never more than the burst
    for _ in range(4):
        share.check(UID)
    with pytest.raises(RefusedError):
        share.check(UID)
    for exempt in (0, os.geteuid()):
        for _ in range(100):
            share.check(exempt)
    assert share.refusals == {RATE: 3}


def test_only_the_first_refusal_of_a_second_is_written() -> None:
    clock = ManualClock()
    share = UserShare(clock.monotonic)
    share.limit_rate(1.0, burst=1)
    share.check(UID)
    quiet = []
    for _ in range(3):
        for _ in range(5):
            with pytest.raises(RefusedError) as refused:
                share.check(UID)
            quiet.append(refused.value.quiet)
        clock.advance(1.0)
        share.check(UID)  # the token that second brought
    assert quiet == [False, True, True, True, True] * 3
    assert share.refusals[RATE] == 15


def test_no_limit_and_a_full_history() -> None:
    share = UserShare(ManualClock().monotonic)
    for _ in range(1000):
        share.check(UID)  # no rate set: no limit
    share.history_full = "over --max-db-size"
    with pytest.raises(RefusedError) as refused:
        share.check(UID)
    assert (refused.value.reason, refused.value.kind) == ("over --max-db-size", "limit")
    share.check(0)
    assert share.refusals == {HISTORY_FULL: 1}


def test_the_engine_refuses_arms_and_heartbeats_past_the_rate_from_any_source() -> None:
    clock = ManualClock()
    reaper = Reaper(clock=clock, watch_exits=False)
    # The test runs as root, which is exempt: its own process stands for a user's here.
    reaper.user_share.exempt_uids = frozenset()
    reaper.user_share.limit_rate(1.0, burst=3)
    seen: list[TimerEvent] = []
    reaper.add_listener(seen.append)
    pid = os.getpid()  # observe-only timers on ourselves: nothing is ever signalled
    deadline = clock.time() + 60
    reaper.acquire(ArmRequest(pid, "a", deadline, 0), Origin("http"))
    reaper.acquire(
        ArmRequest(pid, "a", deadline + 1, 0), Origin("http")
    )  # a heartbeat takes one too
    assert reaper.apply(ArmRequest(pid, "b", deadline, 0), Origin("fifo"))
    for source in ("fifo", "queue", "fifo"):
        assert not reaper.apply(ArmRequest(pid, "c", deadline, 0), Origin(source))
    with pytest.raises(RefusedError):
        reaper.acquire(ArmRequest(pid, "c", deadline, 0), Origin("http"))
    # Releases are never refused: their arms paid.
    assert reaper.apply(ArmRequest(pid, "a", -1, 0), Origin("fifo"))
    assert reaper.release(pid, "b", Origin("http")) is not None
    reaper.bus.drain()
    kinds = [event.kind for event in seen]
    assert kinds == [
        EventKind.ACQUIRED,
        EventKind.EXTENDED,
        EventKind.ACQUIRED,
        EventKind.REFUSED,  # the first of the second; the three after it only counted
        EventKind.RELEASED,
        EventKind.RELEASED,
    ]
    assert reaper.user_share.refusals[RATE] == 4


def test_a_users_requests_refused_for_other_reasons_are_written_within_its_rate() -> None:
    """Issue 20 review: a second user's FIFO wrote about 3,000 ``refused`` rows (and
    WARNING lines) a second, targeting root's pid, past a rate of 200. Each such refusal
    takes a token as an arm does; with none left, the first of each second is written."""
    clock = ManualClock()
    reaper = Reaper(clock=clock, watch_exits=False)
    reaper.user_share.limit_rate(1.0, burst=3)
    seen: list[TimerEvent] = []
    reaper.add_listener(seen.append)
    root_pid = os.getpid()  # the test runs as root: not the user's to arm or release
    deadline = clock.time() + 60

    def flood() -> None:
        for _ in range(20):
            assert not reaper.apply(
                ArmRequest(root_pid, "x", deadline, 9), Origin("fifo", owner_uid=UID)
            )
            with pytest.raises(RefusedError):  # a scope no arm could have: refused alike
                reaper.release(root_pid, "bad\x00scope", Origin("http", owner_uid=UID))

    flood()
    reaper.bus.drain()
    assert len(seen) == 3 + 1  # the burst, then the first of the second
    assert all(event.kind == EventKind.REFUSED for event in seen)
    clock.advance(1.0)  # one token, and a new second
    flood()
    reaper.bus.drain()
    assert len(seen) == 4 + 2
    assert reaper.user_share.unwritten_refusals == 80 - 6
    # Its own rate only: root's refusals, and another user's, are all written.
    assert not reaper.apply(ArmRequest(-5, "x", deadline, 9), Origin("fifo"))
    assert not reaper.apply(
        ArmRequest(root_pid, "x", deadline, 9), Origin("fifo", owner_uid=UID + 1)
    )
    reaper.bus.drain()
    assert len(seen) == 8
    assert reaper.user_share.refusals[RATE] == 0  # none of these was over the arm rate
