"""Each user's share of what the service writes: a rate of events per uid, and a switch
that refuses new writes while the recorded history is full.

Every arm and heartbeat becomes rows in the database (a timer, its events), so one user
arming and releasing in a loop could fill the disk for everyone (issue 20: 653 MB in
12 s from four connections). Each request that arms or moves a timer takes a token from
its worker's uid's bucket, whatever the source (HTTP, the FIFOs, the queue): over the
rate it is refused (kind "limit", HTTP 429 with ``Retry-After``).

Releases take no token: each ends a timer whose arming already paid, so they are
bounded by the arms, and refusing one would only turn it into a kill later.

Root and the service's own uid are exempt, as from the per-user cap: their workers are
what the service protects, and root could fill the disk by other means anyway.

A refusal over the rate is itself not written for every request (that would be the
flood's disk write again): the first of each second per uid is, the rest are counted
(``refusals``). So are the user's requests refused for any other reason (another
user's pid, no such process, a bad value): each is a row and a WARNING line, and one
user's FIFO delivered about 3,000 a second of them past a rate of 200 (issue 20
review). Such a refusal takes a token like an arm (``refusal_is_quiet``); with none
left, only the first of the second is written, the rest are counted
(``unwritten_refusals``). Its own lock: the engine calls in with and without its own.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .admission import RefusedError

__all__ = ["HISTORY_FULL", "RATE", "REFUSAL_REASONS", "UserShare"]

# The reasons counted in ``refusals`` (timer_refusals_total{reason}).
RATE = "rate"
HISTORY_FULL = "history_full"
REFUSAL_REASONS = (RATE, HISTORY_FULL)

# Buckets of uids idle this long (full again) are forgotten: memory stays bounded by
# the uids active in the last minute.
_FORGET_SECONDS = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    last_recorded_refusal: float = float("-inf")


class UserShare:
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._rate: float | None = None
        self._burst = 0.0
        self._buckets: dict[int, _Bucket] = {}
        self._last_sweep = monotonic()
        self.exempt_uids = frozenset({0, os.geteuid()})
        # Set by the service while its database is over --max-db-size and pruning could
        # not bring it under: new writes of non-exempt users are refused with it.
        self.history_full: str | None = None
        self.refusals: collections.Counter[str] = collections.Counter()
        # Refusals for other reasons that were not written (over the rate; see the module).
        self.unwritten_refusals = 0
        self._lock = threading.Lock()

    def limit_rate(self, per_second: float | None, burst: float | None = None) -> None:
        """At most ``per_second`` arms and heartbeats per uid, after a burst of
        ``burst`` (default: ten seconds' worth). None or <= 0: no limit."""
        self._rate = per_second if per_second is not None and per_second > 0 else None
        if self._rate is not None:
            self._burst = burst if burst is not None else max(1.0, 10 * self._rate)
        self._buckets.clear()

    def check(self, uid: int | None) -> None:
        """Take one token of ``uid``'s, or raise RefusedError (kind "limit"), whose
        ``quiet`` is True when this refusal need not be written (already said this second)."""
        if uid is None or uid in self.exempt_uids:
            return
        with self._lock:
            self._check_locked(uid)

    def refusal_is_quiet(self, uid: int | None) -> bool:
        """Whether the refusal of ``uid``'s request, for a reason other than this share,
        need not be written: it takes a token as an arm would; with none left, only the
        first of each second is written. Always False without a rate, or for root."""
        if uid is None or uid in self.exempt_uids or self._rate is None:
            return False
        with self._lock:
            now = self._monotonic()
            self._sweep(now)
            if self._take_token(uid, now, self._rate) or self._first_refusal_this_second(uid, now):
                return False
            self.unwritten_refusals += 1
            return True

    def _check_locked(self, uid: int) -> None:
        now = self._monotonic()
        self._sweep(now)
        if self.history_full is not None:
            self._refuse(uid, now, HISTORY_FULL, self.history_full, retry_after=60.0)
        if self._rate is None or self._take_token(uid, now, self._rate):
            return
        wait = (1.0 - self._buckets[uid].tokens) / self._rate
        self._refuse(
            uid,
            now,
            RATE,
            f"uid {uid} is over its rate of {self._rate:g} timer requests a second "
            "(--max-events-per-user-per-second); slow down and retry",
            retry_after=wait,
        )

    def _take_token(self, uid: int, now: float, rate: float) -> bool:
        bucket = self._buckets.get(uid)
        if bucket is None:
            bucket = self._buckets[uid] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _first_refusal_this_second(self, uid: int, now: float) -> bool:
        bucket = self._buckets.setdefault(uid, _Bucket(self._burst, now))
        if now - bucket.last_recorded_refusal < 1.0:
            return False
        bucket.last_recorded_refusal = now
        return True

    def _refuse(self, uid: int, now: float, reason: str, message: str, retry_after: float) -> None:
        self.refusals[reason] += 1
        error = RefusedError(message, kind="limit")
        error.retry_after = retry_after
        error.quiet = not self._first_refusal_this_second(uid, now)
        raise error

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _FORGET_SECONDS:
            return
        self._last_sweep = now
        idle = [uid for uid, bucket in self._buckets.items() if now - bucket.at > _FORGET_SECONDS]
        for uid in idle:
            del self._buckets[uid]
