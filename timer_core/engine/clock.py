"""Clocks the engine reads, so tests can drive time by hand.

Deadlines arrive as unix seconds (torch's wire format) but are held on the
monotonic clock, so a wall-clock step after receipt moves no deadline.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never steps; used for every deadline."""

    def time(self) -> float:
        """Unix seconds; used only to convert wire deadlines and stamp events."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to: for tests with no sleeps."""

    def __init__(self, start_monotonic: float = 1000.0, start_time: float = 1_700_000_000.0):
        self._monotonic = start_monotonic
        self._time = start_time

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._time

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._time += seconds

    def step_wall_clock(self, seconds: float) -> None:
        """Move only the wall clock, as NTP or an operator would."""
        self._time += seconds
