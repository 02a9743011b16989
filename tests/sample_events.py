"""Engine events made by hand, for the recorder and retention tests, and request lines
in torch's FIFO format."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from timer_core import EventKind, TimerEvent, TimerState
from timer_core.engine import Labels, RankStack, RefusedRequest, Timer
from timer_core.engine.event_details import (
    Armed,
    Ended,
    Escalated,
    EventDetail,
    Incident,
    Kill,
    NoKill,
    Refusal,
)
from timer_core.engine.states import STATE_AFTER

__all__ = [
    "captures_of",
    "changed",
    "event",
    "refused",
    "timer",
    "timer_of",
    "torch_line",
]

# What an event of each kind says when a test does not say otherwise.
_DETAILS: dict[EventKind, EventDetail] = {
    EventKind.ACQUIRED: Armed(),
    EventKind.EXTENDED: Armed(),
    EventKind.RELEASED: Ended(),
    EventKind.EXPIRED: NoKill("observe only"),
    EventKind.KILLED: Kill(0.0),
    EventKind.KILL_FAILED: NoKill("permission denied (EPERM)"),
    EventKind.WORKER_GONE: NoKill("worker already gone"),
    EventKind.ESCALATED: Escalated("still alive", (100,)),
    EventKind.INCIDENT: Incident(None, ()),
}

_EVENT_FIELDS = frozenset({"seq", "kind", "at", "detail"})
_LABELS = frozenset(field.name for field in dataclasses.fields(Labels))


def timer(timer_id: int, state: str = "active", **changes: Any) -> Timer:
    """A snapshot of timer ``timer_id`` (pid 100, scope "s"), with ``changes``."""
    made = Timer(
        id=timer_id,
        pid=100,
        scope_id="s",
        signal=9,
        source="test",
        state=TimerState(state),
        acquired_at=1.0,
        expiration_time=5.0,
        process_create_time=1.0,
    )
    changed = _changed_timer(made, changes)
    assert isinstance(changed, Timer)
    return changed


def event(seq: int, kind: str, timer_id: int, state: str | None = None) -> TimerEvent:
    """An event of kind ``kind`` of timer ``timer_id``, leaving it in ``state`` (by
    default the state the kind leaves a timer in)."""
    kind = EventKind(kind)
    after = state if state is not None else STATE_AFTER.get(kind, TimerState.ACTIVE)
    return TimerEvent(seq, kind, float(seq), timer(timer_id, after), _DETAILS[kind])


def refused(seq: int, **changes: Any) -> TimerEvent:
    """A refused request (no timer), with ``changes`` to its fields."""
    request = RefusedRequest(pid=100, scope_id="s", signal=9, source="test", expiration_time=1.0)
    made = TimerEvent(seq, EventKind.REFUSED, float(seq), request, Refusal("refused", "100"))
    return changed(made, **changes)


def changed(made: TimerEvent, **changes: Any) -> TimerEvent:
    """``made`` with ``changes``, each to the event, its timer or the timer's labels by
    name (``captures``: the stacks of an incident; ``stack``: an expiry's stack)."""
    own = {name: value for name, value in changes.items() if name in _EVENT_FIELDS}
    rest = {name: value for name, value in changes.items() if name not in _EVENT_FIELDS}
    captures = rest.pop("captures", None)
    if "stack" in rest:
        assert isinstance(made.detail, Kill | NoKill)
        own["detail"] = dataclasses.replace(made.detail, stack=rest.pop("stack"))
    new_timer = _changed_timer(made.timer, rest) if rest else made.timer
    made = dataclasses.replace(made, timer=new_timer, **own)
    if captures is not None:
        assert isinstance(new_timer, Timer)
        made = dataclasses.replace(made, detail=Incident(new_timer.labels.job_id, captures))
    return made


def _changed_timer(made: Timer | RefusedRequest, changes: dict[str, Any]) -> Timer | RefusedRequest:
    labels = {name: value for name, value in changes.items() if name in _LABELS}
    rest = {name: value for name, value in changes.items() if name not in _LABELS}
    if labels:
        assert isinstance(made, Timer), "a refused request has no labels"
        rest["labels"] = dataclasses.replace(made.labels, **labels)
    return dataclasses.replace(made, **rest)


def timer_of(made: TimerEvent) -> Timer:
    """The timer an event leaves (every kind has one, but ``refused``)."""
    assert isinstance(made.timer, Timer), made
    return made.timer


def captures_of(made: TimerEvent) -> tuple[RankStack, ...]:
    """The stacks an ``incident`` event took."""
    assert isinstance(made.detail, Incident), made
    return made.detail.captures


def torch_line(pid: int, scope: str, expiration_time: float, signal: int = 9) -> bytes:
    """One request line as torch's FileTimerClient writes it (``expiration_time`` -1: a
    release)."""
    payload = {
        "version": 1,
        "pid": pid,
        "scope_id": scope,
        "expiration_time": expiration_time,
        "signal": signal,
    }
    return json.dumps(payload).encode() + b"\n"
