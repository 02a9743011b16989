"""Which expiries open an incident here, and the capture of a whole job's ranks.

When one rank of a job hangs, its peers soon block waiting for it, and their timers
expire too: killed one by one, each stack shows only one rank, and the first kill
makes torchrun tear the rest down before anyone looked at them. So the first expiry
of a job's timer on this node captures the stacks of every live process of the job
known here, all at once, before any signal to the job; the analysis
(``timer_core.diagnosis.incident``) then says which rank the others wait for.

Expiries of the job within the window after that join the incident (the service
merges them): they do not capture the whole job again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .capturer import RankStack
from .timers import LiveTimer

__all__ = ["JobIncidents"]

# Jobs remembered at most (each for one window): beyond it, the oldest are forgotten.
_MAX_JOBS = 4096


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
        self.members = members
        self.emit = emit
        self._opened: dict[str, float] = {}  # job → when it opened here (monotonic)
        self._lock = threading.Lock()

    def opens(self, job_id: str, now_monotonic: float) -> bool:
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
