"""What the engine tells its listeners: an event for each thing that happens to a timer,
and one for each request it refuses, which is logged too.

Each event is built as the bus numbers it (``EventBus.publish``), under the bus's lock,
so its time stamp and its number agree with the order listeners see.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Protocol

from .. import log_names
from .arm_request import ArmRequest, Origin
from .capturer import CapturedStack, RankStack
from .clock import Clock
from .events import EventBus, EventKind, TimerEvent
from .process import signal_name
from .request_text import MAX_SCOPE_LENGTH, recordable_text, shown
from .timers import LiveTimer

__all__ = [
    "Emit",
    "EventEmitter",
    "refused_event",
    "storable_float",
    "storable_int",
    "timer_event",
]

# The refusals' lines have always come from the reaper's logger: operators filter on it.
logger = logging.getLogger(log_names.REAPER)

_INT64 = 2**63


class Emit(Protocol):
    """``EventEmitter.timer``, as the kill path is handed it."""

    def __call__(
        self,
        kind: str,
        timer: LiveTimer,
        state: str,
        stack: CapturedStack | None = None,
        **detail: Any,
    ) -> None: ...


def storable_int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    return default


def storable_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e300 else 0.0
        return number if math.isfinite(number) else 0.0
    return 0.0


def timer_event(
    seq: int,
    at: float,
    kind: str,
    timer: LiveTimer,
    state: str,
    stack: CapturedStack | None,
    detail: dict[str, Any],
) -> TimerEvent:
    """The event for something that happened to ``timer``; the stack's summary goes
    in ``detail`` (the text travels beside it, for the listeners that store it)."""
    if stack is not None:
        detail["stack"] = {
            "method": stack.method,
            "seconds": round(stack.seconds, 4),
            "bytes": len(stack.text),
            "notes": list(stack.notes),
        }
    return TimerEvent(
        seq=seq,
        kind=kind,
        timer_id=timer.id,
        pid=timer.identity.pid,
        scope_id=timer.scope_id,
        at=at,
        state=state,
        signal=timer.signal,
        source=timer.source,
        acquired_at=timer.acquired_at,
        expiration_time=timer.expiration_time,
        process_create_time=timer.identity.create_time,
        process_uid=timer.identity.uid,
        detail=detail,
        dump_signal=timer.dump_signal,
        stack=stack,
        node=timer.node,
        job_id=timer.labels.job_id,
        rank=timer.labels.rank,
        local_rank=timer.labels.local_rank,
        world_size=timer.labels.world_size,
    )


def refused_event(
    seq: int, at: float, request: ArmRequest, origin: Origin, reason: str, node: str = ""
) -> TimerEvent:
    """The event for a request that was not armed: ``request`` holds the values as
    received, of any type."""
    pid, scope_id, expiration_time, signal = (
        request.pid,
        request.scope_id,
        request.expiration_time,
        request.signal,
    )
    source = origin.source
    return TimerEvent(
        seq=seq,
        kind=EventKind.REFUSED,
        timer_id=None,
        # What was asked is kept as text; the typed fields hold only values a
        # listener can store (a 200-digit pid must not break the recorder), and the
        # text only what it can encode (a lone surrogate or a NUL goes escaped).
        pid=storable_int(pid, -1),
        scope_id=recordable_text(scope_id),
        at=at,
        state="refused",
        signal=storable_int(signal, 0),
        source=source,
        acquired_at=at,
        expiration_time=storable_float(expiration_time),
        detail={"reason": reason, "requested_pid": shown(pid)},
        node=node,
    )


class EventEmitter:
    def __init__(self, bus: EventBus, clock: Clock, node: str = "") -> None:
        self._bus = bus
        self._clock = clock
        self._node = node

    def timer(
        self,
        kind: str,
        timer: LiveTimer,
        state: str,
        stack: CapturedStack | None = None,
        **detail: Any,
    ) -> None:
        """Publish what happened to ``timer``; ``state`` is its state after it."""
        now = self._clock.time
        self._bus.publish(lambda seq: timer_event(seq, now(), kind, timer, state, stack, detail))

    def incident(self, trigger: LiveTimer, captures: tuple[RankStack, ...]) -> None:
        """Publish that ``trigger``'s expiry opened an incident for its job, with the
        stacks of the job's processes here (the event's ``captures``)."""
        detail: dict[str, Any] = {
            "job_id": trigger.labels.job_id,
            "processes": len(captures),
            "stacks": sum(1 for capture in captures if capture.stack is not None),
        }
        now = self._clock.time
        self._bus.publish(
            lambda seq: dataclasses.replace(
                timer_event(seq, now(), EventKind.INCIDENT, trigger, "active", None, detail),
                captures=captures,
            )
        )

    def refused(self, request: ArmRequest, origin: Origin, reason: str) -> None:
        """Log and publish the refusal of a request, with its values as received."""
        pid, scope_id, signal = request.pid, request.scope_id, request.signal
        # The values are what the request carried, of any type: each is repr()'d (an
        # integer signal is named), so a newline in a scope cannot forge a log line.
        logger.warning(
            "refused a timer request from %s: pid=%s scope=%s signal=%s reason=%r",
            origin.source,
            shown(pid),
            shown(scope_id, MAX_SCOPE_LENGTH + 2),
            signal_name(signal)
            if isinstance(signal, int)
            and not isinstance(signal, bool)
            and -_INT64 <= signal < _INT64
            else shown(signal),
            reason,
        )
        now, node = self._clock.time, self._node
        self._bus.publish(lambda seq: refused_event(seq, now(), request, origin, reason, node))
