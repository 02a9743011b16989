"""The reaper's thread: it sleeps until the next entry is due or a request wakes it, then
steps.

Kill latency does not depend on how often anything polls: a request that makes the
earliest deadline earlier wakes the thread at once (``wake``). The loop also wakes at
least once a second when idle, so that a stalled reaper shows (``last_loop_monotonic``),
and it measures how late it woke for a due entry (``last_lag_seconds``). Should the
thread die, ``restart`` starts another: the timers live in the engine, not the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .clock import Clock

__all__ = ["LoopHealth", "ReaperLoop"]


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """Whether the reaper is reaping, on its own clock. The defaults describe a reaper
    that is not meant to run (a hub's): not running, and nothing wrong with that."""

    running: bool = False
    seconds_since_loop: float | None = None
    lag_seconds: float | None = None
    # Set when the loop is dead or stalled: kills are not happening.
    problem: str | None = None


# The loop wakes at least this often even when idle, so that a stalled reaper is
# visible at a cost of one wake-up a second.
_IDLE_TICK_SECONDS = 1.0


class ReaperLoop:
    def __init__(
        self, step: Callable[[], float | None], lock: threading.Lock, clock: Clock
    ) -> None:
        """``step`` reaps what is due and returns when the next entry is (monotonic);
        ``lock`` is the engine's, held by whoever calls ``wake``."""
        self._step = step
        self._lock = lock
        self._wakeup = threading.Condition(lock)
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_requested = False
        self.last_loop_monotonic = clock.monotonic()
        self.last_lag_seconds = 0.0

    @property
    def started(self) -> bool:
        return self._thread is not None

    def wake(self) -> None:
        """Cut the current sleep short: the earliest due time moved. The caller holds
        the engine's lock."""
        self._wake_requested = True
        self._wakeup.notify()

    def start(self) -> None:
        self._stopping = False
        self._spawn()

    def restart(self) -> bool:
        """Start a new thread if the old one died (the supervisor's remedy). False if
        it runs, or is stopping."""
        if self.is_running() or self._stopping:
            return False
        self.last_loop_monotonic = self._clock.monotonic()
        self._spawn()
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name="timer-reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._wake_requested = False
            next_due = self._step()
            now = self._clock.monotonic()
            self.last_loop_monotonic = now
            with self._lock:
                if self._stopping:
                    return
                if self._wake_requested:
                    continue
                timeout = _IDLE_TICK_SECONDS
                if next_due is not None:
                    timeout = min(timeout, max(0.0, next_due - now))
                self._wakeup.wait(timeout)
            if next_due is not None:
                self.last_lag_seconds = max(0.0, self._clock.monotonic() - next_due)
