"""Timer records: the live timer the engine owns, the read-only view it hands out, and
the escalation it schedules for a worker that outlives its first signal.

Two clocks, named apart: ``expiration_time`` is unix seconds, as the request carried it
(torch's wire format, the API, the events); ``deadline_monotonic`` is the same moment on
the clock that never steps, fixed when the request arrives. The heap and the kill path
use only the latter, so a wall-clock step after receipt moves no deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .labels import NO_LABELS, Labels
from .process import ProcessIdentity

__all__ = ["Escalation", "LiveTimer", "TimerView"]


@dataclass(frozen=True, slots=True)
class TimerView:
    """A read-only copy of a timer, safe to hand across threads."""

    id: int
    pid: int
    scope_id: str
    signal: int
    source: str
    state: str
    acquired_at: float
    expiration_time: float
    # The worker's real uid (None if unknown): it decides who may act on the timer.
    uid: int | None = None
    # Where and which rank (contract 8): the node that armed it, and the job's labels.
    node: str = ""
    job_id: str | None = None
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None


# eq=False: a live timer is compared and hashed by identity; the heap's stale entries
# are told from current ones by ``is`` and the generation.
@dataclass(slots=True, eq=False)
class LiveTimer:
    """A timer while it is armed: mutable, owned by the Reaper under its lock."""

    id: int
    identity: ProcessIdentity
    scope_id: str
    signal: int
    source: str
    acquired_at: float
    expiration_time: float
    deadline_monotonic: float
    # A signal on which the worker dumps its own stack (faulthandler), if it opted in.
    dump_signal: int | None = None
    # Which rank of which job: the worker's environment, overridden by the request's
    # own labels. Fixed when the timer is created: a heartbeat does not relabel it.
    labels: Labels = NO_LABELS
    node: str = ""
    # Bumped by each heartbeat: heap entries pushed under an older one are stale.
    generation: int = field(default=0, init=False)

    def view(self, state: str = "active") -> TimerView:
        labels = self.labels
        return TimerView(
            self.id,
            self.identity.pid,
            self.scope_id,
            self.signal,
            self.source,
            state,
            self.acquired_at,
            self.expiration_time,
            self.identity.uid,
            self.node,
            labels.job_id,
            labels.rank,
            labels.local_rank,
            labels.world_size,
        )


@dataclass(frozen=True, slots=True)
class Escalation:
    """SIGKILL for these processes if the worker outlives its first signal."""

    timer: LiveTimer
    targets: tuple[ProcessIdentity, ...]
