"""Timer records, the checks a request passes before it may be armed, and the
events that describe what happened to one."""

from __future__ import annotations

import math
import signal as signal_module
from dataclasses import dataclass
from typing import Any

from .capturer import CapturedStack
from .events import EventKind, TimerEvent
from .process import ProcessIdentity

__all__ = [
    "MIN_SIGNAL",
    "Escalation",
    "LiveTimer",
    "RefusedError",
    "TimerView",
    "check_expiration",
    "check_signal",
    "observe_only",
    "refused_event",
    "storable_float",
    "storable_int",
    "timer_event",
]


class RefusedError(ValueError):
    """A request that must not be armed; ``reason`` says why and what to do, and
    ``field`` names the request field at fault."""

    def __init__(self, reason: str, field: str = "pid", *, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        # "invalid": the request is wrong (HTTP 422); "forbidden": well formed, but the
        # requester may not make it (403); "limit": over a per-user cap (429).
        self.kind = kind


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


class LiveTimer:
    """A timer while it is armed: mutable, owned by the Reaper under its lock."""

    __slots__ = (
        "acquired_at",
        "deadline_monotonic",
        "dump_signal",
        "expiration_time",
        "generation",
        "id",
        "identity",
        "scope_id",
        "signal",
        "source",
    )

    def __init__(
        self,
        timer_id: int,
        identity: ProcessIdentity,
        scope_id: str,
        signal: int,
        source: str,
        acquired_at: float,
        expiration_time: float,
        deadline_monotonic: float,
        dump_signal: int | None = None,
    ) -> None:
        self.id = timer_id
        self.identity = identity
        self.scope_id = scope_id
        self.signal = signal
        self.source = source
        self.acquired_at = acquired_at
        self.expiration_time = expiration_time
        self.deadline_monotonic = deadline_monotonic
        # A signal on which the worker dumps its own stack (faulthandler), if it opted in.
        self.dump_signal = dump_signal
        self.generation = 0

    def view(self, state: str = "active") -> TimerView:
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
        )


@dataclass(frozen=True, slots=True)
class Escalation:
    """SIGKILL for these processes if the worker outlives its first signal."""

    timer: LiveTimer
    targets: tuple[ProcessIdentity, ...]


# Computed once: valid_signals() builds a set of enum members on every call.
_VALID_SIGNALS = frozenset(int(number) for number in signal_module.valid_signals())


_INT64 = 2**63


def storable_int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    return default


def storable_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e300 else 0.0
        return number if math.isfinite(number) else 0.0
    return 0.0


def observe_only(signal: Any) -> bool:
    return isinstance(signal, int) and not isinstance(signal, bool) and signal <= 0


# Any value <= 0 means observe only (torch's convention), but it must still fit the
# 32-bit column it is stored in: a -2**70 must not be accepted and then never stored.
MIN_SIGNAL = -(2**31)


def check_signal(signal: Any, field: str = "signal") -> int:
    if isinstance(signal, bool) or not isinstance(signal, int):
        raise RefusedError(f"{field} must be an integer, got {signal!r}", field)
    if signal < MIN_SIGNAL:
        raise RefusedError(f"{field} {signal} is out of range (at least {MIN_SIGNAL})", field)
    if signal > 0 and signal not in _VALID_SIGNALS:
        raise RefusedError(f"{field} {signal} is not a signal on this system", field)
    return signal


def check_expiration(expiration_time: Any) -> float:
    if isinstance(expiration_time, bool) or not isinstance(expiration_time, int | float):
        raise RefusedError(
            f"expiration_time must be a number, got {expiration_time!r}", "expiration_time"
        )
    if not math.isfinite(expiration_time):
        raise RefusedError("expiration_time must be finite", "expiration_time")
    return float(expiration_time)


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
    )


def refused_event(
    seq: int, at: float, request: tuple[Any, Any, Any, Any], source: str, reason: str
) -> TimerEvent:
    """The event for a request that was not armed: ``request`` is (pid, scope_id,
    expiration_time, signal) as received, of any type."""
    pid, scope_id, expiration_time, signal = request
    return TimerEvent(
        seq=seq,
        kind=EventKind.REFUSED,
        timer_id=None,
        # What was asked is kept as text; the typed fields hold only values a
        # listener can store (a 200-digit pid must not break the recorder).
        pid=storable_int(pid, -1),
        scope_id=str(scope_id)[:1024],
        at=at,
        state="refused",
        signal=storable_int(signal, 0),
        source=source,
        acquired_at=at,
        expiration_time=storable_float(expiration_time),
        detail={"reason": reason, "requested_pid": repr(pid)[:64]},
    )
