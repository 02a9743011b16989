"""The straggler detector (app.ops.stragglers) on engine events as the engine makes
them: which ranks it flags and when, what it leaves out, and the bounded gauge."""

from __future__ import annotations

import random
import re
import statistics
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.ops.stragglers import (
    RANKS_FOLLOWED,
    RANKS_PER_OWNER,
    SCOPES_FOLLOWED,
    SCOPES_PER_OWNER,
    SlowdownCollector,
    Stragglers,
    _median_without,
)
from tests.sample_events import changed, event, timer_of
from timer_core import EventKind, TimerEvent
from timer_core.engine.event_details import Ended, Straggler

WINDOW = 5
# The owner of the sample events' workers (their uid is unknown), and two users.
NO_UID = -1
ALICE = 1001
MALLORY = 1002


class Bus:
    """What the engine's bus does with a published event: numbers it."""

    def __init__(self) -> None:
        self.events: list[TimerEvent] = []

    def publish(self, build: Any) -> TimerEvent:
        made: TimerEvent = build(len(self.events) + 1000)
        self.events.append(made)
        return made


def detector(ratio: float = 1.2, max_series: int = 100) -> tuple[Stragglers, Bus]:
    stragglers = Stragglers(ratio, WINDOW, max_series)
    bus = Bus()
    stragglers.publish_to(bus.publish, lambda: 5000.0)
    return stragglers, bus


def release(
    rank: int | None, hold: float, job: str | None = "run-1", scope: str = "compute", **more: Any
) -> TimerEvent:
    made = event(0, EventKind.RELEASED, 100 + (rank or 0))
    labels = {"job_id": job, "rank": rank, "world_size": 4}
    return changed(made, at=1000.0 + hold, acquired_at=1000.0, scope_id=scope, **labels, **more)


def steps(stragglers: Stragglers, paces: dict[int, float], count: int = WINDOW) -> None:
    for _ in range(count):
        for rank, pace in paces.items():
            stragglers(release(rank, pace))


def flagged(bus: Bus) -> list[tuple[str, int, float]]:
    found = []
    for made in bus.events:
        assert made.kind == EventKind.STRAGGLER and isinstance(made.detail, Straggler)
        found.append((made.timer.scope_id, made.detail.rank, made.detail.slowdown))
    return found


def test_the_slow_rank_is_flagged_once_while_it_stays_slow() -> None:
    stragglers, bus = detector()
    steps(stragglers, {0: 1.0, 1: 1.01, 2: 1.3, 3: 0.99})
    [(scope, rank, slowdown)] = flagged(bus)
    assert (scope, rank) == ("compute", 2) and slowdown == pytest.approx(1.3, abs=0.01)
    steps(stragglers, {0: 1.0, 1: 1.01, 2: 1.3, 3: 0.99})
    assert len(bus.events) == 1
    assert stragglers.slowdowns("run-1", NO_UID)[2] == pytest.approx(1.3)
    assert stragglers.straggling_jobs() == [("run-1", NO_UID)]
    # Back in step: no longer flagged; slow again: told again.
    steps(stragglers, {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    assert stragglers.straggling_jobs() == []
    steps(stragglers, {0: 1.0, 1: 1.0, 2: 1.5, 3: 1.0})
    assert [rank for _, rank, _ in flagged(bus)] == [2, 2]


def test_two_ranks_the_slow_one_is_compared_with_the_other_alone() -> None:
    stragglers, bus = detector()
    steps(stragglers, {0: 1.0, 1: 1.25})
    [(scope, rank, slowdown)] = flagged(bus)
    assert (scope, rank) == ("compute", 1) and slowdown == pytest.approx(1.25)


def test_below_the_ratio_and_before_a_full_window_nothing_is_flagged() -> None:
    stragglers, bus = detector()
    steps(stragglers, {0: 1.0, 1: 1.15, 2: 1.0})
    steps(stragglers, {0: 1.0, 1: 2.0, 2: 1.0}, count=2)  # two slow steps of five
    assert bus.events == []
    # One slow step among the window's is not a straggler: the median is.
    stragglers, bus = detector()
    steps(stragglers, {0: 1.0, 1: 1.0}, count=WINDOW - 1)
    steps(stragglers, {0: 1.0, 1: 9.0}, count=1)
    assert bus.events == []


def test_only_healthy_labelled_releases_count() -> None:
    stragglers, bus = detector()
    gone = Ended("worker exited before its deadline", before_deadline=True)
    for _ in range(WINDOW):
        stragglers(release(0, 1.0))
        stragglers(changed(release(1, 5.0), detail=gone))  # died: not a hold
        stragglers(release(None, 5.0))  # no rank
        stragglers(release(1, 5.0, job=None))  # no job
        stragglers(release(1, 1.0))
        stragglers(changed(event(0, EventKind.KILLED, 7), rank=2, job_id="run-1"))
    assert bus.events == []
    assert stragglers.slowdowns("run-1", NO_UID) == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}


def test_each_job_and_scope_is_compared_apart() -> None:
    stragglers, bus = detector()
    for _ in range(WINDOW):
        stragglers(release(0, 1.0, scope="compute"))
        stragglers(release(1, 1.0, scope="compute"))
        stragglers(release(0, 1.0, scope="step", job="run-2"))
        stragglers(release(1, 2.0, scope="step", job="run-2"))
    told = [timer_of(made) for made in bus.events]
    assert [(timer.labels.job_id, timer.scope_id) for timer in told] == [("run-2", "step")]


def test_the_gauge_shows_only_jobs_with_a_straggler_and_at_most_max_series() -> None:
    stragglers, _ = detector(max_series=3)
    for job, slow in (("calm", None), ("slow-a", 3), ("slow-b", 0)):
        # A rank is judged at each of its releases: rank 0's window is full before the
        # others' are, so it is judged at its next one.
        for _ in range(WINDOW + 1):
            for rank in range(4):
                stragglers(release(rank, 1.4 if rank == slow else 1.0, job=job))
    registry = CollectorRegistry()
    registry.register(SlowdownCollector(stragglers))
    text = generate_latest(registry).decode()

    def of(name: str) -> dict[tuple[str, int], float]:
        pattern = rf'^{name}\{{job_id="([^"]*)",rank="(\d+)",uid="-1"\}} (\S+)$'
        return {
            (job, int(rank)): float(value) for job, rank, value in re.findall(pattern, text, re.M)
        }

    series = of("timer_rank_slowdown")
    # The slowest first: both stragglers are among the three; the calm job has none.
    assert len(series) == 3
    assert series[("slow-a", 3)] == pytest.approx(1.4)
    assert series[("slow-b", 0)] == pytest.approx(1.4)
    assert not any(job == "calm" for job, _ in series)
    # The flag of the same series: 1 for the stragglers only, whatever the ratio.
    flags = of("timer_rank_straggler")
    assert set(flags) == set(series)
    assert {key for key, value in flags.items() if value == 1.0} == {("slow-a", 3), ("slow-b", 0)}


def test_median_without_one_value_is_the_median_of_the_rest() -> None:
    draw = random.Random(12)
    for size in range(2, 40):
        values = sorted(draw.choice([1.0, 2.0, 3.0, draw.random()]) for _ in range(size))
        left_out = draw.choice(values)
        rest = list(values)
        rest.remove(left_out)
        assert _median_without(values, left_out) == statistics.median(rest)


def test_a_scope_follows_a_bounded_number_of_ranks() -> None:
    # A worker names its own rank: ranks past the bound are not followed (no memory).
    stragglers, bus = detector()
    for rank in range(RANKS_FOLLOWED + 50):
        stragglers(release(rank, 1.0))
    for _ in range(WINDOW):
        stragglers(release(RANKS_FOLLOWED + 1, 5.0))
        stragglers(release(0, 1.0))
        stragglers(release(1, 1.0))
    assert bus.events == []
    assert RANKS_FOLLOWED + 1 not in stragglers.slowdowns("run-1", NO_UID)


def test_another_users_ranks_of_the_same_job_id_are_another_job() -> None:
    # Alice's two ranks at one pace; Mallory's worker claims her job id, rank 2, slower:
    # it is compared with no one of Alice's, and Alice's job shows her ranks only.
    stragglers, bus = detector()
    for _ in range(WINDOW):
        stragglers(release(0, 1.0, uid=ALICE))
        stragglers(release(1, 1.0, uid=ALICE))
        stragglers(release(2, 1.5, uid=MALLORY))
    assert bus.events == []
    assert set(stragglers.slowdowns("run-1", ALICE)) == {0, 1}
    assert stragglers.slowdowns("run-1", MALLORY) == {}
    assert stragglers.straggling_jobs() == []


def test_one_user_cannot_push_out_anothers_scopes_or_take_every_rank() -> None:
    stragglers, bus = detector()
    alice = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.5}

    def alice_steps(count: int) -> None:
        for _ in range(count):
            for rank, pace in alice.items():
                stragglers(release(rank, pace, uid=ALICE))

    alice_steps(WINDOW - 1)
    # Mallory: a scope per release, more than every scope followed, then ranks over
    # three scopes, more than a user's share.
    for number in range(SCOPES_FOLLOWED + 10):
        stragglers(release(0, 1.0, scope=f"s-{number}", uid=MALLORY))
    for rank in range(RANKS_PER_OWNER // 2 + 10):
        for scope in ("wide-1", "wide-2", "wide-3"):
            stragglers(release(rank, 1.0, scope=scope, uid=MALLORY))
    # Alice's scope was still followed, her windows with it: one more step fills them.
    alice_steps(1)
    told = [(made.timer.uid, made.detail.rank) for made in bus.events]  # type: ignore[union-attr]
    assert told == [(ALICE, 3)]
    # Mallory follows at most her share of scopes and of ranks.
    assert stragglers._scopes_of[MALLORY] <= SCOPES_PER_OWNER
    assert stragglers._ranks_of[MALLORY] <= RANKS_PER_OWNER
