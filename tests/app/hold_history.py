"""Recorded histories of one scope's holds, written the way the service writes them:
engine events (an acquisition, then a release or a kill) fed to the real recorder. The
tests compute what the statistics must say from the same holds, in Python."""

from __future__ import annotations

import dataclasses
import math
import random
import time

from sqlalchemy import Engine

from app.db.recorder import Recorder
from tests.sample_events import changed, event
from timer_core import EventKind, TimerEvent
from timer_core.engine.event_details import Ended

__all__ = ["BASE", "Hold", "lognormal_holds", "nearest_rank", "record", "scope_history"]

# Recent: the service's retention prunes what is older.
BASE = float(int(time.time()) - 7200)


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """One timer of the history: held ``seconds``, then released, or killed if ``hung``."""

    seconds: float
    hung: bool = False
    # A worker that exited before its deadline: released, but no healthy hold.
    gone: bool = False


def lognormal_holds(count: int, median: float, seed: int) -> list[float]:
    """``count`` step times around ``median`` seconds, with a tail to the right, in
    whole 1/1024 s: recorded as unix times, each is then exactly their difference."""
    draw = random.Random(seed)
    return [_tick(median * math.exp(draw.gauss(0.0, 0.25))) for _ in range(count)]


def _tick(seconds: float) -> float:
    return max(1, round(seconds * 1024)) / 1024


def nearest_rank(values: list[float], percent: int) -> float:
    """The nearest-rank percentile: the smallest value at a rank >= percent% of n."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


def scope_history(
    holds: list[Hold],
    *,
    job: str | None,
    scope: str,
    first_id: int,
    start: float = BASE,
    uid: int = 1000,
) -> list[TimerEvent]:
    """Each hold in turn, one after the other (timer ids from ``first_id``), of workers
    of ``uid``. Give holds and ``start`` in whole 1/1024 s, so the recorded times give
    them back exactly."""
    events: list[TimerEvent] = []
    at = start
    for number, hold in enumerate(holds):
        timer_id = first_id + number
        labels = {"job_id": job, "rank": 0, "world_size": 1} if job is not None else {}
        common = {"scope_id": scope, "acquired_at": at, "uid": uid, **labels}
        events.append(changed(event(0, EventKind.ACQUIRED, timer_id), at=at, **common))
        end = at + hold.seconds
        kind = (
            EventKind.KILLED
            if hold.hung
            else EventKind.WORKER_GONE
            if hold.gone
            else EventKind.RELEASED
        )
        state = "released" if hold.gone else None
        ended = changed(event(0, kind, timer_id, state), at=end, **common)
        if hold.gone:
            ended = dataclasses.replace(
                ended, detail=Ended("worker exited before its deadline", before_deadline=True)
            )
        events.append(ended)
        at = end + _tick(0.01)
    return events


def record(engine: Engine, events: list[TimerEvent]) -> None:
    """Write ``events`` in order with the service's recorder."""
    recorder = Recorder(engine)
    for seq, item in enumerate(events, start=1):
        recorder(dataclasses.replace(item, seq=seq))
    recorder.flush()
