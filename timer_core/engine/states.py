"""The words of the event log: a timer's states, the kinds of event, and the one table
saying which state each kind leaves a timer in.

Both are ``StrEnum``s, so each member is the very string the wire, the database and the
REST API carry (contract 4): a new kind is one member here and one detail type in
``event_details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = ["END_KINDS", "STATE_AFTER", "EventKind", "TimerState"]


class TimerState(StrEnum):
    """``killed``: the signal was delivered. ``expired``: the deadline passed without a
    kill (observe only, the worker was gone, the kill was refused or failed)."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    KILLED = "killed"


class EventKind(StrEnum):
    ACQUIRED = "acquired"
    EXTENDED = "extended"
    RELEASED = "released"
    EXPIRED = "expired"
    KILLED = "killed"
    KILL_FAILED = "kill_failed"
    WORKER_GONE = "worker_gone"
    REFUSED = "refused"
    ESCALATED = "escalated"
    # A job's timer expired: its ranks' stacks were captured before any signal to it.
    INCIDENT = "incident"
    # A worker still alive well after its SIGKILL (stuck in the kernel), and its exit.
    UNKILLABLE = "unkillable"
    # A rank of a job slower than the others at a scope (contract 12), told on the
    # release that showed it; that timer stays released.
    STRAGGLER = "straggler"


# The state a timer is in after an event of each kind. A kind missing here finds its
# timer armed and leaves it so (an incident precedes the job's first kill), or has no
# timer (a refused request). One exception, carried by its detail: a worker gone
# before its deadline leaves its timers released (``event_details.Ended``).
STATE_AFTER: Final[Mapping[EventKind, TimerState]] = MappingProxyType(
    {
        EventKind.ACQUIRED: TimerState.ACTIVE,
        EventKind.EXTENDED: TimerState.ACTIVE,
        EventKind.RELEASED: TimerState.RELEASED,
        EventKind.KILLED: TimerState.KILLED,
        EventKind.EXPIRED: TimerState.EXPIRED,
        EventKind.KILL_FAILED: TimerState.EXPIRED,
        EventKind.WORKER_GONE: TimerState.EXPIRED,
        # A SIGKILL for a worker that outlived its timer's signal: the timer ended killed.
        EventKind.ESCALATED: TimerState.KILLED,
        # Only a worker that was sent SIGKILL can outlive it: its timer ended killed.
        EventKind.UNKILLABLE: TimerState.KILLED,
    }
)

# The kinds that end a timer (its end is recorded once, by the first of these).
END_KINDS: Final = frozenset(
    {
        EventKind.RELEASED,
        EventKind.EXPIRED,
        EventKind.KILLED,
        EventKind.KILL_FAILED,
        EventKind.WORKER_GONE,
    }
)
