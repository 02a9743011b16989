"""What each kind of event says beyond the timer: one frozen type per shape, so a
listener reads a kill's lateness or a refusal's reason as fields, never by looking
for keys in a dict.

``as_json()`` is the one place a detail becomes the JSON the event log stores and
``GET /events`` answers (contract 4): its keys are the ones the log has always had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .capturer import CapturedStack, RankStack
from .states import STATE_AFTER, EventKind, TimerState

__all__ = [
    "Armed",
    "Ended",
    "Escalated",
    "EventDetail",
    "Incident",
    "JsonObject",
    "JsonValue",
    "Kill",
    "NoKill",
    "Refusal",
    "Straggler",
    "Unkillable",
    "captured_stack",
    "state_after",
]

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Armed:
    """``acquired``, ``extended``: the timer says it all."""

    def as_json(self) -> JsonObject:
        return {}


@dataclass(frozen=True, slots=True)
class Ended:
    """``released``, and ``worker_gone`` outside a reap: the timer ended with no signal."""

    reason: str | None = None
    # The source whose request released it (a release, not a cleanup).
    released_by: str | None = None
    # A worker gone before its deadline leaves its timers released, not expired.
    before_deadline: bool = False

    def as_json(self) -> JsonObject:
        return _known(reason=self.reason, released_by=self.released_by)


@dataclass(frozen=True, slots=True)
class Kill:
    """``killed``: the worker got its signal, from this timer or, for another of its
    timers due at once, from that one (``signalled_by``)."""

    # Seconds from the deadline to the signal.
    late: float
    signalled_by: int | None = None
    # The children signalled with it (None: not asked to signal children).
    children: tuple[int, ...] | None = None
    # What went wrong on the way, the signal sent regardless.
    error: str | None = None
    children_error: str | None = None
    stack: CapturedStack | None = None
    # Why there is no stack, when there is none.
    stack_note: str | None = None

    @property
    def sent_signal(self) -> bool:
        """Whether this timer's own signal killed the worker (what the kill counters,
        latency histogram and dashboard count)."""
        return self.signalled_by is None

    def reason(self) -> str | None:
        if self.signalled_by is None:
            return None
        return f"worker already signalled for timer {self.signalled_by}"

    def as_json(self) -> JsonObject:
        children: JsonValue = list(self.children) if self.children is not None else None
        said = _known(latency=self.late, children=children, reason=self.reason(), error=self.error)
        return said | _capture_json(self.stack, self.stack_note, self.children_error)


@dataclass(frozen=True, slots=True)
class NoKill:
    """``expired``, ``kill_failed``, ``worker_gone`` of a reap: due, and not killed."""

    reason: str
    # Seconds past the deadline when it was observed (None: not measured).
    late: float | None = None
    children_error: str | None = None
    stack: CapturedStack | None = None
    stack_note: str | None = None

    def as_json(self) -> JsonObject:
        said = _known(reason=self.reason, latency=self.late)
        return said | _capture_json(self.stack, self.stack_note, self.children_error)


@dataclass(frozen=True, slots=True)
class Escalated:
    """``escalated``: the worker outlived its first signal, and got SIGKILL."""

    reason: str
    # The processes the SIGKILL reached (none: the escalation failed).
    sigkilled: tuple[int, ...]

    def as_json(self) -> JsonObject:
        return {"reason": self.reason, "sigkilled": list(self.sigkilled)}


@dataclass(frozen=True, slots=True)
class Refusal:
    """``refused``: why, and the pid as it was asked for (any type, shown as text)."""

    reason: str
    requested_pid: str

    def as_json(self) -> JsonObject:
        return {"reason": self.reason, "requested_pid": self.requested_pid}


@dataclass(frozen=True, slots=True)
class Incident:
    """``incident``: the stack of every live process of the job here, taken at once
    before the job's first signal."""

    job_id: str | None
    captures: tuple[RankStack, ...]

    def as_json(self) -> JsonObject:
        return {
            "job_id": self.job_id,
            "processes": len(self.captures),
            "stacks": sum(1 for capture in self.captures if capture.stack is not None),
        }


@dataclass(frozen=True, slots=True)
class Unkillable:
    """``unkillable``: the worker was still alive ``seconds`` after its SIGKILL, in the
    state ``/proc`` showed then (``D``, "disk sleep") and waiting in the kernel function
    ``wchan``; or, with ``exited``, it has exited at last, ``seconds`` after the SIGKILL.
    One of each per worker."""

    seconds: float
    state: str | None = None
    state_name: str | None = None
    wchan: str | None = None
    exited: bool = False
    # Why ``state`` is unknown (its /proc files did not answer in time).
    note: str | None = None

    @property
    def reason(self) -> str:
        if self.exited:
            return f"exited {self.seconds:.1f}s after its SIGKILL"
        where = f" in {self.wchan}" if self.wchan else ""
        state = f"{self.state} ({self.state_name})" if self.state_name else self.state or "?"
        return f"still alive {self.seconds:.1f}s after its SIGKILL: {state}{where}"

    def as_json(self) -> JsonObject:
        # state, wchan and seconds always (contract 10), null when unknown.
        said: JsonObject = {
            "state": self.state,
            "wchan": self.wchan,
            "seconds": round(self.seconds, 3),
        }
        exited = True if self.exited else None
        return said | _known(state_name=self.state_name, exited=exited, note=self.note)


@dataclass(frozen=True, slots=True)
class Straggler:
    """``straggler``: over its last ``window`` holds of the scope, ``rank``'s median
    hold is ``slowdown`` times the other ranks' (at least ``ratio``)."""

    rank: int
    slowdown: float
    window: int
    ratio: float

    @property
    def reason(self) -> str:
        return f"rank {self.rank} is {self.slowdown:.2f}x slower than the others here"

    def as_json(self) -> JsonObject:
        return {
            "rank": self.rank,
            "slowdown": self.slowdown,
            "window": self.window,
            "ratio": self.ratio,
        }


EventDetail: TypeAlias = (
    Armed | Ended | Kill | NoKill | Escalated | Refusal | Incident | Unkillable | Straggler
)


def captured_stack(detail: EventDetail) -> CapturedStack | None:
    """The worker's stack, captured before the signal: only an expiry's outcome has one."""
    return detail.stack if isinstance(detail, Kill | NoKill) else None


def state_after(kind: EventKind, detail: EventDetail) -> TimerState | None:
    """The state an event of ``kind`` leaves its timer in (None: unchanged)."""
    if isinstance(detail, Ended) and detail.before_deadline:
        return TimerState.RELEASED
    return STATE_AFTER.get(kind)


def _capture_json(
    stack: CapturedStack | None, note: str | None, children_error: str | None
) -> JsonObject:
    """What an expiry says of its stack: its summary (the text is stored apart), or
    why there is none."""
    summary: JsonValue = None
    if stack is not None:
        summary = {
            "method": stack.method,
            "seconds": round(stack.seconds, 4),
            "bytes": len(stack.text),
            "notes": list(stack.notes),
        }
    return _known(children_error=children_error, stack_note=note, stack=summary)


def _known(**values: JsonValue) -> JsonObject:
    """``values`` but those that are None: the log leaves out what an event does not
    know, rather than storing nulls."""
    return {key: value for key, value in values.items() if value is not None}
