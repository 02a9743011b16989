"""The timeout an ``"expires_in": "auto"`` request is armed with (contract 12).

A job is its id and its owner: the holds learned from are those of the worker's own
uid (another user's workers may label their timers with any job id).

Until a job's scope has ``--auto-min-samples`` healthy holds recorded, the timer uses
``--auto-initial-timeout`` (source ``initial``); from then on the scope's
``suggested_timeout`` (app.db.scope_stats: max(--auto-floor, 3 x p99, 1.5 x max) over
its last 1,000 holds; source ``learned``).

A learned timeout is kept for ``LEARNED_FOR_SECONDS``: a thousand ranks arming the same
scope every step ask the database once in that time, not once each. A scope still
learning is asked again on each arming, so the first arming after its last needed
release already learns (each is one indexed query of about a millisecond).

Arming never waits long on the database: the question gets ``ASK_SECONDS``; a
database that is away, slow or failing leaves the last timeout learned for the scope,
else the initial one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine

from app.db import scope_stats

__all__ = ["ASK_SECONDS", "LEARNED_FOR_SECONDS", "Choice", "LearnedTimeouts"]

LEARNED_FOR_SECONDS = 5.0
ASK_SECONDS = 1.0
# Scopes whose learned timeout is remembered (the least recently armed are forgotten).
_REMEMBERED = 10_000

Source = Literal["initial", "learned"]
_Key = tuple[int, str | None, str]


@dataclass(frozen=True, slots=True)
class Choice:
    """The timeout chosen for one arming, and why."""

    seconds: float
    source: Source


class LearnedTimeouts:
    """The timeouts learned per (owner, job, scope), from the recorded holds; the owner
    is a uid, or UNKNOWN_OWNER."""

    def __init__(self, engine: Engine, initial: float, min_samples: int, floor: float) -> None:
        self._engine = engine
        self.initial = Choice(initial, "initial")
        self.min_samples = min_samples
        self.floor = floor
        self._lock = threading.Lock()
        # (owner, job, scope) -> (the learned choice, when it was learned, monotonic s)
        self._learned: OrderedDict[_Key, tuple[Choice, float]] = OrderedDict()

    def cached(self, owner: int, job: str | None, scope: str, now: float) -> Choice | None:
        """The timeout learned for the scope less than ``LEARNED_FOR_SECONDS`` ago."""
        with self._lock:
            found = self._learned.get((owner, job, scope))
        if found is None or now - found[1] >= LEARNED_FOR_SECONDS:
            return None
        return found[0]

    def fallback(self, owner: int, job: str | None, scope: str) -> Choice:
        """Without the database: the last timeout learned for the scope, or the initial."""
        with self._lock:
            found = self._learned.get((owner, job, scope))
        return found[0] if found is not None else self.initial

    def look_up(self, owner: int, job: str | None, scope: str, now: float) -> Choice:
        """Ask the database (blocking: call it on a thread) and remember a learned one."""
        with self._engine.connect() as connection:
            stats = scope_stats.hold_stats(
                connection, job, owner, scope, scope_stats.DEFAULT_WINDOW
            )
        if stats is None or stats.count < self.min_samples:
            return self.initial
        seconds = scope_stats.suggested_timeout(stats.p99, stats.max, self.floor)
        choice = Choice(seconds, "learned")
        key = (owner, job, scope)
        with self._lock:
            self._learned[key] = (choice, now)
            self._learned.move_to_end(key)
            while len(self._learned) > _REMEMBERED:
                self._learned.popitem(last=False)
        return choice
