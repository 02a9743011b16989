"""Which expiries open an incident here, and the capture of a whole job's ranks.

When one rank of a job hangs, its peers soon block waiting for it, and their timers
expire too: killed one by one, each stack shows only one rank, and the first kill
makes torchrun tear the rest down before anyone looked at them. So the first expiry
of a job's timer on this node captures the stacks of every live process of the job
known here, all at once, before any signal to the job; the analysis
(``timer_core.diagnosis.incident``) then says which rank the others wait for.

Expiries of the job within the window after that join the incident (the service
merges them): they do not capture the whole job again. One that comes while the job's
capture is still running waits for it (within its own budget) and takes the stack it
got: killed at once, it would be signalled before the job's stacks are all taken (and
torchrun would tear the rest down), and a second py-spy on a process being dumped
fails to suspend it and spoils both captures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .capturer import CapturedStack, RankStack
from .process import ProcessIdentity
from .timers import LiveTimer

__all__ = ["JobCapture", "JobIncidents", "JobKey", "job_key"]

# A job is its id *and* the user whose processes run it: a job id is any string a
# worker chose, so another user's worker labelled with the same id must not make the
# service dump this user's ranks, nor hold back this job's incident.
JobKey = tuple[int | None, str]


def job_key(timers: list[LiveTimer]) -> JobKey | None:
    """The job of a worker's timers (its uid and the first job id among them)."""
    for timer in timers:
        if timer.labels.job_id is not None:
            return timer.identity.uid, timer.labels.job_id
    return None


# Jobs remembered at most (each for one window): beyond it, the oldest are forgotten.
_MAX_JOBS = 4096


class JobCapture:
    """A job's capture in flight: ``done`` once its incident is published, with the
    stack (and what to say about a missing one) of each process it captured."""

    def __init__(self) -> None:
        self.done = threading.Event()
        # Each process: its stack, or None and why there is none.
        self.stacks: dict[ProcessIdentity, tuple[CapturedStack | None, str | None]] = {}


class JobIncidents:
    def __init__(
        self,
        window: float,
        members: Callable[[str], list[LiveTimer]],
        emit: Callable[[LiveTimer, tuple[RankStack, ...]], None],
    ) -> None:
        """``members(job_id)``: the job's armed timers here; ``emit``: publish the
        incident opened by a timer, with the captures."""
        self.window = window
        self._members = members
        self.emit = emit
        self._opened: dict[JobKey, float] = {}  # job → when it opened here (monotonic)
        self._capturing: dict[JobKey, JobCapture] = {}  # job → its capture still running
        self._lock = threading.Lock()

    def members(self, job: JobKey) -> list[LiveTimer]:
        """The job's armed timers here: its id's, of its user's processes only."""
        uid, job_id = job
        return [timer for timer in self._members(job_id) if timer.identity.uid == uid]

    def opens(self, job_id: JobKey, now_monotonic: float) -> bool:
        """Whether an expiry of ``job_id`` now opens an incident: none opened for the
        job here within the window. Called from the kill path: O(1), never blocks long."""
        with self._lock:
            opened = self._opened.get(job_id)
            if opened is not None and now_monotonic - opened < self.window:
                return False
            self._opened.pop(job_id, None)  # re-inserted last: the dict stays oldest-first
            self._opened[job_id] = now_monotonic
            while len(self._opened) > _MAX_JOBS:
                del self._opened[next(iter(self._opened))]
            return True

    def begin(self, job_id: JobKey) -> JobCapture:
        """The capture of ``job_id``'s processes that starts now."""
        capture = JobCapture()
        with self._lock:
            self._capturing[job_id] = capture
        return capture

    def capturing(self, job_id: JobKey) -> JobCapture | None:
        """``job_id``'s capture, while it is still running."""
        with self._lock:
            return self._capturing.get(job_id)

    def finish(self, job_id: JobKey, capture: JobCapture) -> None:
        """``capture`` is over (its incident published, or given up): its waiters go on."""
        with self._lock:
            if self._capturing.get(job_id) is capture:
                del self._capturing[job_id]
        capture.done.set()
