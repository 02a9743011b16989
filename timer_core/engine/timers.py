"""Timer records: the live timer the engine owns, the snapshot it hands out, and
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
from .states import TimerState

__all__ = ["Escalation", "LiveTimer", "RefusedRequest", "Timer"]


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer as it is at one moment: a read-only copy, safe to hand across threads,
    and the one shape every listener and reader takes a timer in."""

    id: int
    pid: int
    scope_id: str
    signal: int
    source: str
    state: TimerState
    acquired_at: float
    expiration_time: float
    # The worker's real uid (None if unknown): it decides who may act on the timer.
    uid: int | None = None
    # The node that armed it (contract 8), and which rank of which job the worker is.
    node: str = ""
    labels: Labels = NO_LABELS
    # What re-arms it after a restart: the worker's start time (its identity with the
    # pid) and the signal on which it dumps its own stack, if it opted in.
    process_create_time: float | None = None
    dump_signal: int | None = None
    # How its deadline was chosen: "explicit", "initial" or "learned" (contract 12).
    timeout_source: str = "explicit"


@dataclass(frozen=True, slots=True)
class RefusedRequest:
    """A request that armed nothing, as far as it can be stored: the values it carried
    that a listener can keep (a 200-digit pid or a NaN deadline cannot be)."""

    pid: int
    scope_id: str
    signal: int
    source: str
    expiration_time: float
    node: str = ""


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
    # How the first deadline was chosen (contract 12); a heartbeat keeps it.
    timeout_source: str = "explicit"
    # Bumped by each heartbeat: heap entries pushed under an older one are stale.
    generation: int = field(default=0, init=False)

    def snapshot(self, state: TimerState = TimerState.ACTIVE) -> Timer:
        """This timer as it is now, in ``state``."""
        return Timer(
            id=self.id,
            pid=self.identity.pid,
            scope_id=self.scope_id,
            signal=self.signal,
            source=self.source,
            state=state,
            acquired_at=self.acquired_at,
            expiration_time=self.expiration_time,
            uid=self.identity.uid,
            node=self.node,
            labels=self.labels,
            process_create_time=self.identity.create_time,
            dump_signal=self.dump_signal,
            timeout_source=self.timeout_source,
        )


@dataclass(frozen=True, slots=True)
class Escalation:
    """SIGKILL for these processes if the worker outlives its first signal."""

    timer: LiveTimer
    targets: tuple[ProcessIdentity, ...]
