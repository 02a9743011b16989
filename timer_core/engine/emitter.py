"""What the engine tells its listeners: an event for each thing that happens to a timer,
and one for each request it refuses, which is logged too.

Each event is built as the bus numbers it (``EventBus.publish``), under the bus's lock,
so its time stamp and its number agree with the order listeners see.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

from .. import log_names
from .arm_request import ArmRequest, Origin
from .capturer import RankStack
from .clock import Clock
from .event_details import EventDetail, Incident, Refusal, state_after
from .events import EventBus, TimerEvent
from .process import signal_name
from .request_text import MAX_SCOPE_LENGTH, recordable_text, shown
from .states import EventKind, TimerState
from .timers import LiveTimer, RefusedRequest, Timer

__all__ = [
    "Emit",
    "EventEmitter",
    "refused_event",
    "storable_float",
    "storable_int",
]

# The refusals' lines have always come from the reaper's logger: operators filter on it.
logger = logging.getLogger(log_names.REAPER)

_INT64 = 2**63


class Emit(Protocol):
    """``EventEmitter.timer``, as the kill path is handed it."""

    def __call__(self, kind: EventKind, timer: LiveTimer, detail: EventDetail) -> Timer: ...


def storable_int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    return default


def storable_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e300 else 0.0
        return number if math.isfinite(number) else 0.0
    return 0.0


def refused_event(
    seq: int, at: float, request: ArmRequest, origin: Origin, reason: str, node: str = ""
) -> TimerEvent:
    """The event for a request that was not armed: ``request`` holds the values as
    received, of any type."""
    # What was asked is kept as text; the typed fields hold only values a listener can
    # store (a 200-digit pid must not break the recorder), and the text only what it
    # can encode (a lone surrogate or a NUL goes escaped).
    refused = RefusedRequest(
        pid=storable_int(request.pid, -1),
        scope_id=recordable_text(request.scope_id),
        signal=storable_int(request.signal, 0),
        source=origin.source,
        expiration_time=storable_float(request.expiration_time),
        node=node,
    )
    detail = Refusal(reason, shown(request.pid))
    return TimerEvent(seq, EventKind.REFUSED, at, refused, detail)


class EventEmitter:
    def __init__(self, bus: EventBus, clock: Clock, node: str = "") -> None:
        self._bus = bus
        self._clock = clock
        self._node = node

    def timer(self, kind: EventKind, timer: LiveTimer, detail: EventDetail) -> Timer:
        """Publish what happened to ``timer``; the snapshot it carries (in the state
        ``kind`` leaves it in) is returned."""
        snapshot = timer.snapshot(state_after(kind, detail) or TimerState.ACTIVE)
        now = self._clock.time
        self._bus.publish(lambda seq: TimerEvent(seq, kind, now(), snapshot, detail))
        return snapshot

    def incident(self, trigger: LiveTimer, captures: tuple[RankStack, ...]) -> None:
        """Publish that ``trigger``'s expiry opened an incident for its job, with the
        stacks of the job's processes here."""
        self.timer(EventKind.INCIDENT, trigger, Incident(trigger.labels.job_id, captures))

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
