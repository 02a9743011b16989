"""The connection gate, with fake connections and a fake descriptor count: who is
admitted, who is closed to make room, and what health says."""

from __future__ import annotations

import os
from dataclasses import dataclass

from app.access.connection_gate import ConnectionGate


@dataclass(eq=False)
class FakeConnection:
    busy: bool = False
    evicted: bool = False

    def evictable(self) -> bool:
        return not self.busy

    def evict(self) -> None:
        self.evicted = True


class Descriptors:
    """A process with ``base`` descriptors of its own, plus one per open connection."""

    def __init__(self, limit: int, base: int) -> None:
        self.limit = limit
        self.base = base
        self.gate: ConnectionGate | None = None

    def count(self) -> int:
        assert self.gate is not None
        # The connection being admitted already has its socket: +1.
        return self.base + self.gate.connections + 1


def gate_with(max_connections: int, limit: int = 65536, base: int = 20) -> ConnectionGate:
    descriptors = Descriptors(limit, base)
    gate = ConnectionGate(
        max_connections, limit=lambda: descriptors.limit, count_open=descriptors.count
    )
    descriptors.gate = gate
    return gate


def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    gate = gate_with(max_connections=3)
    first, second, third = FakeConnection(busy=True), FakeConnection(), FakeConnection()
    for connection in (first, second, third):
        assert gate.admit(connection)
    newcomer = FakeConnection()
    assert gate.admit(newcomer)
    # The first is busy with a request: the oldest idle one, the second, is closed.
    assert (first.evicted, second.evicted, third.evicted) == (False, True, False)
    assert gate.connections == 3 and gate.shed["evicted"] == 1


def test_a_connection_that_just_finished_a_request_is_closed_last() -> None:
    gate = gate_with(max_connections=2)
    older, newer = FakeConnection(), FakeConnection()
    gate.admit(older)
    gate.admit(newer)
    gate.active(older)
    gate.admit(FakeConnection())
    assert newer.evicted and not older.evicted


def test_when_every_connection_is_busy_the_newcomer_is_refused() -> None:
    gate = gate_with(max_connections=2)
    busy = [FakeConnection(busy=True), FakeConnection(busy=True)]
    for connection in busy:
        gate.admit(connection)
    assert not gate.admit(FakeConnection())
    assert gate.shed["refused"] == 1 and not any(c.evicted for c in busy)
    gate.closed(busy[0])
    assert gate.admit(FakeConnection())


def test_connections_stop_short_of_the_descriptors_kept_for_kills() -> None:
    # A limit of 256 keeps 128 for kills; 20 are the service's own: 107 connections fit.
    gate = gate_with(max_connections=1000, limit=256, base=20)
    held = [FakeConnection() for _ in range(400)]
    for connection in held:
        assert gate.admit(connection)
    assert gate.connections == 107
    assert sum(c.evicted for c in held) == 400 - 107
    status = gate.status()
    assert status["open"] <= 256 - status["reserved_for_kills"]


def test_health_is_degraded_near_the_limit_and_after_shedding_not_for_slow_clients() -> None:
    gate = gate_with(max_connections=1, limit=1000, base=10)
    gate.admit(FakeConnection())
    gate.timed_out()
    assert gate.problems(gate.status()) == []
    gate.admit(FakeConnection())  # evicts the first
    [shedding] = gate.problems(gate.status())
    assert "1 idle ones closed to make room" in shedding
    near = {**gate.status(), "open": 850}
    assert any("850 of 1000 file descriptors" in problem for problem in gate.problems(near))


def test_a_user_at_its_share_is_refused_until_one_of_its_own_closes() -> None:
    gate = ConnectionGate(100, max_per_user=2)
    other_uid = 12345 if os.geteuid() != 12345 else 12346
    held = [FakeConnection(), FakeConnection()]
    for connection in held:
        assert not gate.user_full(other_uid)
        assert gate.admit(connection, other_uid)
    assert gate.user_full(other_uid)
    # Others are not held back by it: another uid, every remote peer (None) as one user,
    # and root and the service's own uid, which have no share at all.
    assert not gate.user_full(other_uid + 1) and not gate.user_full(None)
    for _ in range(3):
        assert gate.admit(FakeConnection(), os.geteuid())
    assert not gate.user_full(os.geteuid()) and not gate.user_full(0)
    gate.closed(held[0])
    assert not gate.user_full(other_uid)
    assert gate.shed["per_user"] == 1
