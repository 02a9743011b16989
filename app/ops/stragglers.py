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

__all__ = ["RANKS_FOLLOWED", "SlowdownCollector", "Stragglers"]

# Job scopes followed at once (the least recently released are forgotten), and ranks
# per scope: a worker names its own rank (up to 2**24), and each one followed is a
# window of holds in memory.
_SCOPES_FOLLOWED = 1000
RANKS_FOLLOWED = 16_384

Publish = Callable[[Callable[[int], TimerEvent]], object]


@dataclass
class _Scope:
    """One job's scope: each rank's last holds, its pace, and the paces sorted."""

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
        self._scopes: OrderedDict[tuple[str, str], _Scope] = OrderedDict()
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
        slowdown = self._add(job, timer.scope_id, rank, event.at - timer.acquired_at)
        if slowdown is not None:
            self._announce(timer, rank, slowdown)

    def _add(self, job: str, scope_id: str, rank: int, hold: float) -> float | None:
        """Take one hold; the rank's slowdown if it has just become a straggler."""
        with self._lock:
            scope = self._scopes.get((job, scope_id))
            if scope is None:
                scope = self._scopes[(job, scope_id)] = _Scope()
                while len(self._scopes) > _SCOPES_FOLLOWED:
                    self._scopes.popitem(last=False)
            else:
                self._scopes.move_to_end((job, scope_id))
            holds = scope.holds.get(rank)
            if holds is None:
                if len(scope.holds) >= RANKS_FOLLOWED:
                    return None
                holds = scope.holds[rank] = deque(maxlen=self.window)
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

    def slowdowns(self, job: str) -> dict[int, float]:
        """Each rank's slowdown in ``job`` (its largest over the job's scopes), for the
        ranks with a pace."""
        found: dict[int, float] = {}
        with self._lock:
            for (job_id, _), scope in self._scopes.items():
                if job_id != job:
                    continue
                for rank in scope.paces:
                    slowdown = self._slowdown(scope, rank)
                    if slowdown is not None:
                        found[rank] = max(found.get(rank, 0.0), slowdown)
        return found

    def straggling_jobs(self) -> list[str]:
        """The jobs with a rank flagged now."""
        with self._lock:
            return sorted({job for (job, _), scope in self._scopes.items() if scope.flagged})


class SlowdownCollector(Collector):
    """``timer_rank_slowdown{job_id, rank}``: every rank's slowdown, for the jobs that
    have a straggler now only, and at most ``max_series`` series (the slowest first)."""

    def __init__(self, stragglers: Stragglers) -> None:
        self._stragglers = stragglers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "timer_rank_slowdown",
            "A rank's median hold over the other ranks' (jobs with a straggler only).",
            labels=["job_id", "rank"],
        )
        series = [
            (slowdown, job, rank)
            for job in self._stragglers.straggling_jobs()
            for rank, slowdown in self._stragglers.slowdowns(job).items()
        ]
        series.sort(key=lambda item: -item[0])
        for slowdown, job, rank in series[: self._stragglers.max_series]:
            family.add_metric([job, str(rank)], slowdown)
        yield family
