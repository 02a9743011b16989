"""What the metrics count of the engine's own events (contract 5): a kill only when a
timer's own signal was sent, an expiry once per timer whose deadline passed, and
nothing more for an escalation or for a worker gone before its deadline."""

from __future__ import annotations

import signal

from prometheus_client import Counter, Histogram

from app.ops.health import Health
from app.ops.metrics import ServiceMetrics
from tests.timer_core.world import World
from timer_core.engine import ArmRequest, EventKind


def sample(metric: Counter | Histogram, name: str, **labels: str) -> float:
    for family in metric.collect():
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def no_scrape() -> Health:
    raise AssertionError("only the events are counted here; nothing scrapes")


def test_kills_and_expiries_are_counted_once_each() -> None:
    world = World(escalate_after=5.0)
    metrics = ServiceMetrics(no_scrape)
    world.reaper.add_listener(metrics)
    term = signal.SIGTERM
    # Two timers of one worker due at once: one signal, two expiries.
    world.reaper.acquire(ArmRequest(100, "a", world.at(1), term))
    world.reaper.acquire(ArmRequest(100, "b", world.at(1), term))
    # Observe only: an expiry, no kill.
    world.reaper.acquire(ArmRequest(102, "o", world.at(1), 0))
    # Gone before its deadline: neither.
    world.reaper.acquire(ArmRequest(101, "c", world.at(10), term))
    world.reaper.worker_exited(world.processes[101])

    world.advance(1.5)
    # The worker outlives SIGTERM (the fake one never dies): SIGKILL follows.
    world.advance(5.0)

    assert world.signaller.sent == [(100, term), (100, signal.SIGKILL)]
    kinds = world.kinds()
    assert kinds.count(EventKind.KILLED) == 2 and EventKind.ESCALATED in kinds
    assert EventKind.WORKER_GONE in kinds
    assert sample(metrics.kills, "timer_kills_total", signal="SIGTERM") == 1
    assert sample(metrics.kills, "timer_kills_total", signal="SIGKILL") == 0
    assert sample(metrics.kill_latency, "timer_kill_latency_seconds_count") == 1
    assert sample(metrics.expirations, "timer_expirations_total", source="api") == 3
    assert sample(metrics.acquisitions, "timer_acquisitions_total", source="api") == 4
    assert sample(metrics.releases, "timer_releases_total", source="api") == 0
