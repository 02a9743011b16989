"""A fake process table, clock and signaller around one Reaper: the engine driven step
by step on a ManualClock, with no sleeps and no real signals."""

from __future__ import annotations

import threading
from typing import Any

from timer_core import ManualClock, ProcessIdentity, Reaper, TimerEvent
from timer_core.engine import CapturedStack, Labels
from timer_core.engine.event_details import Kill, NoKill
from timer_core.engine.labels import NO_LABELS
from timer_core.engine.process import ProcessSignaller, SignalOutcome

SERVER_PID = 4000
PARENT_PID = 3999


class RecordingSignaller(ProcessSignaller):
    """Records signals instead of sending them; outcomes can be scripted per pid."""

    def __init__(self) -> None:
        super().__init__(protected=frozenset({SERVER_PID, PARENT_PID}))
        self.sent: list[tuple[int, int]] = []
        self.outcomes: dict[int, SignalOutcome] = {}
        self.child_map: dict[int, list[ProcessIdentity]] = {}

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        self.sent.append((identity.pid, signum))
        return self.outcomes.get(identity.pid, SignalOutcome(True, "delivered", ""))

    def children(self, identity: ProcessIdentity) -> list[ProcessIdentity]:
        return self.child_map.get(identity.pid, [])


class World:
    """A fake process table, clock and signaller around one Reaper."""

    def __init__(self, **reaper_options: Any) -> None:
        self.clock = ManualClock()
        self.processes: dict[int, ProcessIdentity] = {
            pid: ProcessIdentity(pid, 100.0 + pid) for pid in (100, 101, 102, 200)
        }
        # Each fake process's job labels (its "environment"); none unless a test says.
        self.labels: dict[int, Labels] = {}
        self.signaller = RecordingSignaller()
        self.reaper = Reaper(
            clock=self.clock,
            signaller=self.signaller,
            watch_exits=False,
            identify_process=self.processes.get,
            labels_of=lambda pid: self.labels.get(pid, NO_LABELS),
            **reaper_options,
        )
        self.events: list[TimerEvent] = []
        self.record = self.events.append
        self.reaper.add_listener(self.record)

    def at(self, seconds_from_now: float) -> float:
        return self.clock.time() + seconds_from_now

    def advance(self, seconds: float) -> float | None:
        self.clock.advance(seconds)
        due = self.reaper.step()
        self.reaper.bus.drain()
        return due

    def kinds(self) -> list[str]:
        self.reaper.bus.drain()
        return [event.kind for event in self.events]


def kill_of(event: TimerEvent) -> Kill:
    """What a ``killed`` event says."""
    assert isinstance(event.detail, Kill), event
    return event.detail


def no_kill_of(event: TimerEvent) -> NoKill:
    """What an ``expired``, ``kill_failed`` or ``worker_gone`` of a reap says."""
    assert isinstance(event.detail, NoKill), event
    return event.detail


def stack_note(event: TimerEvent) -> str | None:
    """Why an expiry outcome has no stack (None: it has one, or says nothing)."""
    assert isinstance(event.detail, Kill | NoKill), event
    return event.detail.stack_note


class BlockingCapturer:
    """A ``Capturer`` whose captures do not return until the test says so (as a /proc
    read of a process stuck in the kernel would not)."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.release = threading.Event()
        self.started = threading.Event()

    def capture(
        self, identity: ProcessIdentity, dump_signal: int | None, *, give_up_at: float
    ) -> CapturedStack:
        self.started.set()
        self.release.wait(60)
        return CapturedStack("proc", "released\n", 0.0)
