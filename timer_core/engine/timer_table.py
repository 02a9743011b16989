"""Which timers are live: by (pid, scope), by id, and how many each user holds.

One user must not exhaust the service's memory and descriptors (each distinct worker
pid holds a pidfd), so a new request over ``max_per_uid`` active timers of its worker's
uid is refused. Root and the server's own uid are not capped, and timers restored after
a restart never are (they were accepted once).

Not thread-safe: the Reaper holds its lock around every call.
"""

from __future__ import annotations

import collections
import os

from .admission import RefusedError
from .timers import LiveTimer
from .workers import WorkerRegistry

__all__ = ["TimerTable"]


class TimerTable:
    def __init__(self, workers: WorkerRegistry, *, max_per_uid: int | None) -> None:
        self.by_id: dict[int, LiveTimer] = {}
        self._by_key: dict[tuple[int, str], LiveTimer] = {}
        self._workers = workers
        self._max_per_uid = max_per_uid
        self._uncapped_uids = frozenset({0, os.geteuid()})
        self._per_uid: collections.Counter[int | None] = collections.Counter()
        # Labelled timers by job: an incident captures all of a job's ranks at once.
        self._by_job: dict[str, dict[int, LiveTimer]] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, pid: int, scope_id: str) -> LiveTimer | None:
        return self._by_key.get((pid, scope_id))

    def of_worker(self, pid: int) -> list[LiveTimer]:
        return [self._by_key[(pid, scope)] for scope in self._workers.scopes(pid)]

    def of_job(self, job_id: str) -> list[LiveTimer]:
        return list(self._by_job.get(job_id, {}).values())

    def check_cap(self, uid: int | None) -> None:
        """Raise RefusedError (kind "limit") if ``uid`` may arm no more timers."""
        cap = self._max_per_uid
        if cap is None or uid is None or uid in self._uncapped_uids:
            return
        if self._per_uid[uid] >= cap:
            raise RefusedError(
                f"uid {uid} already holds {cap} active timers, the most one user may hold "
                "(--max-timers-per-user); release some first",
                kind="limit",
            )

    def add(self, timer: LiveTimer) -> bool:
        """Index a new timer. True if its worker is new to the engine: the caller must
        then ``WorkerRegistry.watch`` it, outside the lock."""
        self._per_uid[timer.identity.uid] += 1
        self._by_key[(timer.identity.pid, timer.scope_id)] = timer
        self.by_id[timer.id] = timer
        if timer.labels.job_id is not None:
            self._by_job.setdefault(timer.labels.job_id, {})[timer.id] = timer
        return self._workers.add(timer.identity, timer.scope_id)

    def forget(self, timer: LiveTimer) -> None:
        pid = timer.identity.pid
        del self._by_key[(pid, timer.scope_id)]
        del self.by_id[timer.id]
        job_id = timer.labels.job_id
        if job_id is not None:
            members = self._by_job[job_id]
            del members[timer.id]
            if not members:
                del self._by_job[job_id]
        self._workers.remove(pid, timer.scope_id)
        uid = timer.identity.uid
        self._per_uid[uid] -= 1
        if self._per_uid[uid] <= 0:
            del self._per_uid[uid]
