"""The bounds on unread response data, with fake connections and a fake clock: who is
dropped for stalling, who for the total, and who is kept. The real service under a
flood of unread connections is tests/e2e/test_unread_flood.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from app.access.unsent_data import UnsentData


@dataclass(eq=False)
class FakeConnection:
    unsent: int
    aborted: str | None = None

    def unsent_bytes(self) -> int:
        return self.unsent

    def abort(self, reason: str) -> None:
        self.aborted = reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run the test on an event loop: the watch sweeps on the running loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def watch(clock: Clock, max_total: int = 10_000) -> UnsentData:
    return UnsentData(stall_seconds=30, max_total=max_total, clock=clock)


@on_a_loop
async def test_a_client_that_reads_nothing_is_dropped_after_the_send_timeout() -> None:
    clock = Clock()
    unsent = watch(clock)
    stalled, slow = FakeConnection(5_000), FakeConnection(5_000)
    unsent.paused(stalled)
    unsent.paused(slow)
    for _ in range(4):
        clock.now += 10
        slow.unsent -= 100  # reads a little every time: it is making progress
        unsent.sweep()
    assert stalled.aborted == "stalled"
    assert slow.aborted is None and unsent.connections == 1


def paused_a_second_apart(unsent: UnsentData, clock: Clock, *sizes: int) -> list[FakeConnection]:
    """Connections holding ``sizes`` bytes, paused in turn a second apart."""
    connections = [FakeConnection(size) for size in sizes]
    for connection in connections:
        unsent.paused(connection)
        clock.now += 1
    return connections


@on_a_loop
async def test_over_the_total_the_longest_stalled_go_first() -> None:
    clock = Clock()
    unsent = watch(clock, max_total=10_000)
    oldest, older = paused_a_second_apart(unsent, clock, 4_000, 4_000)
    reader = FakeConnection(4_000)
    unsent.paused(reader)  # 12,000 held: one must go
    assert oldest.aborted == "unsent_budget"
    assert older.aborted is None and reader.aborted is None
    assert unsent.total == 8_000


@on_a_loop
async def test_a_reader_that_took_data_since_the_last_sweep_is_not_taken_for_stalled() -> None:
    clock = Clock()
    unsent = watch(clock, max_total=10_000)
    reader, flood = paused_a_second_apart(unsent, clock, 6_000, 4_000)
    reader.unsent = 5_000  # read 1,000 bytes; no sweep has seen it yet
    newcomer = FakeConnection(4_000)
    unsent.paused(newcomer)  # 13,000 held
    assert flood.aborted == "unsent_budget"
    assert reader.aborted is None and newcomer.aborted is None


@on_a_loop
async def test_one_response_alone_is_never_dropped_for_its_size() -> None:
    clock = Clock()
    unsent = watch(clock, max_total=1_000)
    big = FakeConnection(50_000)
    unsent.paused(big)
    assert big.aborted is None
    unsent.drained(big)  # its client read it
    assert unsent.connections == 0 and unsent.total == 0


@on_a_loop
async def test_the_sweeps_run_on_their_own_while_connections_are_paused() -> None:
    unsent = UnsentData(stall_seconds=0.5, max_total=10_000)
    stalled = FakeConnection(5_000)
    unsent.paused(stalled)
    for _ in range(40):
        await asyncio.sleep(0.1)
        if stalled.aborted:
            break
    assert stalled.aborted == "stalled"


@on_a_loop
async def test_over_the_total_the_user_holding_most_loses_its_own_first() -> None:
    # A user's flood of unread pages, paused after root's dashboard and another user's
    # slow reader: before, the stalest went first whoever held them, so a flood kept
    # fresh by new connections aborted root's and the other user's instead.
    clock = Clock()
    unsent = watch(clock, max_total=10_000)
    dashboard, honest = FakeConnection(3_000), FakeConnection(2_000)
    unsent.paused(dashboard, 0)
    unsent.paused(honest, 1001)
    clock.now += 5
    flood = [FakeConnection(2_000) for _ in range(4)]
    for connection in flood:
        unsent.paused(connection, 1000)
        clock.now += 1
    assert [c.aborted for c in flood] == ["unsent_budget", "unsent_budget", None, None]
    assert dashboard.aborted is None and honest.aborted is None
    assert unsent.total == 9_000

    # With only root's left over the total, root's stalest goes, the last one never.
    alone = watch(clock, max_total=1_000)
    first, second = FakeConnection(900), FakeConnection(900)
    alone.paused(first, 0)
    clock.now += 1
    alone.paused(second, 0)
    assert first.aborted == "unsent_budget" and second.aborted is None
