"""Events reach listeners in the order of their numbers, from any number of threads:
the service's commit wait ("every event up to mine is written") depends on it."""

from __future__ import annotations

import os
import threading
import time

from tests.sample_events import refused
from timer_core import EventBus, Reaper, TimerEvent
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.clock import ManualClock


def test_a_number_taken_first_is_queued_first_even_when_its_thread_is_slow() -> None:
    """Thread A takes number 1 and is slow to queue it; thread B asks for the next
    number meanwhile. Taking a number and queueing it in two steps let B's event 2
    reach the listeners before 1 (and a request waiting on 1 was answered early)."""
    bus = EventBus()
    seen: list[int] = []
    bus.add_listener(lambda event: seen.append(event.seq))
    a_numbered, b_started = threading.Event(), threading.Event()

    def slow_build(seq: int) -> TimerEvent:
        a_numbered.set()
        assert b_started.wait(5)
        time.sleep(0.05)  # B is trying to publish now
        return refused(seq)

    def b() -> None:
        assert a_numbered.wait(5)
        b_started.set()
        bus.publish(refused)

    thread_a = threading.Thread(target=bus.publish, args=(slow_build,))
    thread_b = threading.Thread(target=b)
    thread_a.start()
    thread_b.start()
    thread_a.join(5)
    thread_b.join(5)
    bus.drain()
    assert seen == [1, 2]


def test_the_engine_emits_in_number_order_under_concurrent_requests() -> None:
    clock = ManualClock()
    reaper = Reaper(clock=clock, watch_exits=False)
    seen: list[int] = []
    reaper.add_listener(lambda event: seen.append(event.seq))
    pid = os.getpid()  # observe-only timers on ourselves: nothing is ever signalled
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        barrier.wait(5)
        for round_ in range(200):
            scope = f"w{index}-{round_}"
            reaper.acquire(ArmRequest(pid, scope, clock.time() + 60, 0))
            reaper.release(pid, scope)
            reaper.apply(ArmRequest(-1, scope, 1.0, 9), Origin("test"))  # refused: a third path

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    reaper.bus.drain()
    assert len(seen) == 8 * 200 * 3
    assert seen == sorted(seen) == list(range(1, len(seen) + 1))
