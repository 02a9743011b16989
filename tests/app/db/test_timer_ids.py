"""Fleet timer ids: unique across nodes, ordered by time, past every id a node recorded
before a restart, and safe as JSON numbers."""

from __future__ import annotations

import pytest

from app.db.timer_ids import EPOCH_MS, MAX_NODES, FleetTimerIds, node_of


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def make(node: int, clock: Clock, highest: int = 0) -> FleetTimerIds:
    ids = FleetTimerIds(now_ms=clock)
    ids.start(node, highest)
    return ids


def test_two_nodes_never_make_the_same_id_and_each_id_names_its_node() -> None:
    clock = Clock(EPOCH_MS + 1_000)
    a, b = make(1, clock), make(2, clock)
    made_a = [a() for _ in range(1000)]  # a burst: far more than 4 per millisecond
    made_b = [b() for _ in range(1000)]
    assert len(set(made_a) | set(made_b)) == 2000
    assert {node_of(i) for i in made_a} == {1} and {node_of(i) for i in made_b} == {2}
    assert made_a == sorted(made_a) and made_b == sorted(made_b)


def test_ids_are_ordered_by_time_across_nodes() -> None:
    clock = Clock(EPOCH_MS + 5_000)
    a, b = make(7, clock), make(3, clock)
    first = a()
    clock.ms += 1
    second = b()
    clock.ms += 1
    third = a()
    assert first < second < third


def test_a_restart_continues_past_every_id_it_recorded() -> None:
    clock = Clock(EPOCH_MS + 10_000)
    before = make(5, clock)
    made = [before() for _ in range(10_000)]  # ran ahead of the clock by 2.5 s
    after = make(5, clock, highest=max(made))  # restarted at the same instant
    assert after() > max(made)


def test_ids_stay_below_2_to_the_53_for_decades_and_above_the_old_ones() -> None:
    until_2095 = 69 * 365 * 24 * 3600 * 1000
    ids = make(MAX_NODES - 1, Clock(EPOCH_MS + until_2095))
    assert ids() < 2**53
    assert make(0, Clock(EPOCH_MS + 1))() >= 1 << 12  # above 1, 2, 3, ... of before
    assert node_of(17) is None


def test_an_id_needs_a_node_number() -> None:
    with pytest.raises(RuntimeError, match="start"):
        FleetTimerIds()()
    with pytest.raises(ValueError, match="not below"):
        FleetTimerIds().start(MAX_NODES, 0)
