"""Ranks that are slow but not stuck (contract 12): per job and scope, each rank's
recent holds against the other ranks'.

A rank's pace is the median of its last ``--straggler-window`` healthy holds of the
scope; its slowdown is that over the median of the other ranks' paces (the rank itself
left out, so that with two ranks the slow one is still seen). A rank whose slowdown
reaches ``--straggler-ratio`` gets one ``straggler`` event, and another only after it
has come back under the ratio. A rank is judged at each of its own releases, once its
window and another rank's are full. Computed as each release arrives, on the event bus's
thread, in O(log ranks) per release: a job's paces are kept sorted.

A scope that ends in a collective makes every rank wait for the slowest, so all its
holds are alike: time the compute in a scope of its own (README, "Stragglers").

What a node sees is its own ranks: a job spread over nodes is compared per node.

A job is its id and its owner (contract 8): another user's workers labelled with the
same job id are another job, compared apart and shown apart (``slowdowns(job, owner)``;
the owner is the workers' uid, or UNKNOWN_OWNER). Memory is bounded per owner and in
all (a followed rank is about 850 bytes with a window of 20): a worker names its own
job, scope and rank, so one user may follow at most ``SCOPES_PER_OWNER`` scopes and
``RANKS_PER_OWNER`` ranks, and a new scope past its share or the total replaces the
least recently released scope of the owner with the most, never another's below it.
"""

from __future__ import annotations

import bisect
import statistics
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from timer_core import TimerEvent
from timer_core.engine import EventKind, Timer
from timer_core.engine.event_details import Ended, Straggler

__all__ = [
    "RANKS_FOLLOWED",
    "RANKS_PER_OWNER",
    "SCOPES_FOLLOWED",
    "SCOPES_PER_OWNER",
    "SlowdownCollector",
    "Stragglers",
]

# Job scopes followed at once, in all and per owner (past them, the least recently
# released scope of the owner with the most is forgotten).
SCOPES_FOLLOWED = 1000
SCOPES_PER_OWNER = 250
# Ranks followed per scope, per owner and in all: a worker names its own rank (up to
# 2**24), and each one followed is a window of holds in memory (~850 bytes): ranks past
# these are not followed. 65,536 ranks: about 56 MB; one owner's share about 14 MB.
RANKS_FOLLOWED = 16_384
RANKS_PER_OWNER = 16_384
_RANKS_IN_ALL = 65_536
# The owner of timers whose uid is unknown (app.db.job_models.UNKNOWN_OWNER).
_UNKNOWN_OWNER = -1

_Key = tuple[int, str, str]  # (owner, job, scope)

Publish = Callable[[Callable[[int], TimerEvent]], object]


@dataclass
class _Scope:
    """One job's scope: each rank's last holds, its pace, and the paces sorted."""

    owner: int
    holds: dict[int, deque[float]] = field(default_factory=dict)
    paces: dict[int, float] = field(default_factory=dict)
    sorted_paces: list[float] = field(default_factory=list)
    flagged: set[int] = field(default_factory=set)


def _median_without(ordered: list[float], value: float) -> float:
    """The median of ``ordered`` (sorted) with one occurrence of ``value`` left out."""
    skip = bisect.bisect_left(ordered, value)
    count = len(ordered) - 1

    def at(index: int) -> float:
        return ordered[index if index < skip else index + 1]

    middle = count // 2
    return at(middle) if count % 2 else (at(middle - 1) + at(middle)) / 2


class Stragglers:
    """Fed every engine event; publishes ``straggler`` events on the engine's bus."""

    def __init__(self, ratio: float, window: int, max_series: int) -> None:
        self.ratio = ratio
        self.window = window
        self.max_series = max_series
        self._lock = threading.Lock()
        self._scopes: OrderedDict[_Key, _Scope] = OrderedDict()
        self._scopes_of: dict[int, int] = {}  # owner -> scopes followed
        self._ranks_of: dict[int, int] = {}  # owner -> ranks followed
        self._ranks = 0
        self._publish: Publish | None = None
        self._now: Callable[[], float] | None = None

    def publish_to(self, publish: Publish, now: Callable[[], float]) -> None:
        """Where ``straggler`` events go: the engine's ``bus.publish``, with its clock."""
        self._publish, self._now = publish, now

    def __call__(self, event: TimerEvent) -> None:
        timer = event.timer
        if event.kind != EventKind.RELEASED or not isinstance(timer, Timer):
            return
        detail = event.detail
        # A healthy hold only: released by its worker, not ended by its exit.
        if not isinstance(detail, Ended) or detail.reason is not None or detail.before_deadline:
            return
        job, rank = timer.labels.job_id, timer.labels.rank
        if job is None or rank is None:
            return
        owner = _UNKNOWN_OWNER if timer.uid is None else timer.uid
        slowdown = self._add((owner, job, timer.scope_id), rank, event.at - timer.acquired_at)
        if slowdown is not None:
            self._announce(timer, rank, slowdown)

    def _add(self, key: _Key, rank: int, hold: float) -> float | None:
        """Take one hold; the rank's slowdown if it has just become a straggler."""
        owner = key[0]
        with self._lock:
            scope = self._scopes.get(key)
            if scope is None:
                scope = self._follow(key)
            else:
                self._scopes.move_to_end(key)
            holds = scope.holds.get(rank)
            if holds is None:
                if (
                    len(scope.holds) >= RANKS_FOLLOWED
                    or self._ranks_of.get(owner, 0) >= RANKS_PER_OWNER
                    or self._ranks >= _RANKS_IN_ALL
                ):
                    return None
                holds = scope.holds[rank] = deque(maxlen=self.window)
                self._ranks_of[owner] = self._ranks_of.get(owner, 0) + 1
                self._ranks += 1
            holds.append(hold)
            if len(holds) < self.window:
                return None
            pace = statistics.median(holds)
            old = scope.paces.get(rank)
            if old is not None:
                del scope.sorted_paces[bisect.bisect_left(scope.sorted_paces, old)]
            scope.paces[rank] = pace
            bisect.insort(scope.sorted_paces, pace)
            slowdown = self._slowdown(scope, rank)
            if slowdown is None or slowdown < self.ratio:
                scope.flagged.discard(rank)
                return None
            if rank in scope.flagged:
                return None
            scope.flagged.add(rank)
            return slowdown

    def _follow(self, key: _Key) -> _Scope:
        """A new scope of ``key``'s owner, followed in place of the least recently
        released one of its owner, when it has its share, or of the owner with the most
        scopes, when all are taken."""
        owner = key[0]
        if self._scopes_of.get(owner, 0) >= SCOPES_PER_OWNER:
            self._forget_oldest_of(owner)
        elif len(self._scopes) >= SCOPES_FOLLOWED:
            self._forget_oldest_of(max(self._scopes_of, key=self._scopes_of.__getitem__))
        scope = self._scopes[key] = _Scope(owner)
        self._scopes_of[owner] = self._scopes_of.get(owner, 0) + 1
        return scope

    def _forget_oldest_of(self, owner: int) -> None:
        oldest = next(key for key, scope in self._scopes.items() if scope.owner == owner)
        forgotten = self._scopes.pop(oldest)
        self._scopes_of[owner] -= 1
        self._ranks_of[owner] -= len(forgotten.holds)
        self._ranks -= len(forgotten.holds)
        for counts in (self._scopes_of, self._ranks_of):
            if counts.get(owner) == 0:
                del counts[owner]

    @staticmethod
    def _slowdown(scope: _Scope, rank: int) -> float | None:
        if len(scope.sorted_paces) < 2:
            return None
        others = _median_without(scope.sorted_paces, scope.paces[rank])
        return scope.paces[rank] / others if others > 0 else None

    def _announce(self, timer: Timer, rank: int, slowdown: float) -> None:
        publish, now = self._publish, self._now
        if publish is None or now is None:
            return
        detail = Straggler(rank, round(slowdown, 3), self.window, self.ratio)
        at = now()
        publish(lambda seq: TimerEvent(seq, EventKind.STRAGGLER, at, timer, detail))

    def slowdowns(self, job: str, owner: int) -> dict[int, float]:
        """Each rank's slowdown in ``job`` of ``owner`` (its largest over the job's
        scopes), for the ranks with a pace."""
        found: dict[int, float] = {}
        with self._lock:
            for (uid, job_id, _), scope in self._scopes.items():
                if (uid, job_id) != (owner, job):
                    continue
                for rank in scope.paces:
                    slowdown = self._slowdown(scope, rank)
                    if slowdown is not None:
                        found[rank] = max(found.get(rank, 0.0), slowdown)
        return found

    def flagged(self, job: str, owner: int) -> set[int]:
        """The ranks of ``job`` of ``owner`` flagged now (in any of its scopes)."""
        with self._lock:
            return {
                rank
                for (uid, job_id, _), scope in self._scopes.items()
                if (uid, job_id) == (owner, job)
                for rank in scope.flagged
            }

    def straggling_jobs(self) -> list[tuple[str, int]]:
        """The jobs (id, owner) with a rank flagged now."""
        with self._lock:
            return sorted(
                {(job, uid) for (uid, job, _), scope in self._scopes.items() if scope.flagged}
            )


class SlowdownCollector(Collector):
    """``timer_rank_slowdown{job_id, rank, uid}``: every rank's slowdown, for the jobs
    that have a straggler now only, and at most ``max_series`` series (the slowest
    first); ``timer_rank_straggler`` of the same series: 1 for a rank flagged now (its
    slowdown reached --straggler-ratio, whatever it is set to), 0 for the others, so an
    alert need not know the ratio. ``uid`` (beyond contract 12): the job's owner, -1 if
    unknown; another user's job of the same id is another series."""

    def __init__(self, stragglers: Stragglers) -> None:
        self._stragglers = stragglers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "timer_rank_slowdown",
            "A rank's median hold over the other ranks' (jobs with a straggler only).",
            labels=["job_id", "rank", "uid"],
        )
        flag = GaugeMetricFamily(
            "timer_rank_straggler",
            "1 for a rank flagged as a straggler now (slower by --straggler-ratio), 0 for"
            " the other ranks of its job.",
            labels=["job_id", "rank", "uid"],
        )
        series = []
        for job, owner in self._stragglers.straggling_jobs():
            flagged = self._stragglers.flagged(job, owner)
            for rank, slowdown in self._stragglers.slowdowns(job, owner).items():
                series.append((slowdown, job, owner, rank, rank in flagged))
        series.sort(key=lambda item: -item[0])
        for slowdown, job, owner, rank, is_flagged in series[: self._stragglers.max_series]:
            labels = [job, str(rank), str(owner)]
            family.add_metric(labels, slowdown)
            flag.add_metric(labels, 1.0 if is_flagged else 0.0)
        yield family
        yield flag
