"""The checks a request passes before a timer may be armed, and the error that says why
it may not.

Values arrive as sent: a FIFO line or a JSON body may hold any type, so each check
tests the type before the value. The checks run in the engine's ``acquire``, so every
source (HTTP, the FIFOs, the torch-compatible servers) goes through the same ones.
"""

from __future__ import annotations

import math
import signal as signal_module
from typing import Any

from .arm_request import ArmRequest, Origin
from .process import ProcessSignaller
from .request_text import scope_id_problem, shown

__all__ = [
    "MAX_DEADLINE_SECONDS",
    "MIN_SIGNAL",
    "RefusedError",
    "check_expiration",
    "check_request",
    "check_scope_id",
    "check_signal",
    "not_own_process",
    "observe_only",
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
        # A "limit" that passes: seconds after which a retry may succeed (Retry-After).
        self.retry_after: float | None = None
        # True: counted, but not written as a ``refused`` event (a flood's refusals
        # would otherwise fill the disk in its place; see user_share).
        self.quiet = False


# Computed once: valid_signals() builds a set of enum members on every call.
_VALID_SIGNALS = frozenset(int(number) for number in signal_module.valid_signals())

# Any value <= 0 means observe only (torch's convention), but it must still fit the
# 32-bit column it is stored in: a -2**70 must not be accepted and then never stored.
MIN_SIGNAL = -(2**31)


# The furthest a deadline may be: a timer for months is a mistake (milliseconds given
# as seconds), and it would hold a slot and a pidfd all that time. Every source.
MAX_DEADLINE_SECONDS = 30 * 24 * 3600


def observe_only(signal: Any) -> bool:
    return isinstance(signal, int) and not isinstance(signal, bool) and signal <= 0


def check_signal(signal: Any, field: str = "signal") -> int:
    if isinstance(signal, bool) or not isinstance(signal, int):
        raise RefusedError(f"{field} must be an integer, got {shown(signal)}", field)
    if signal < MIN_SIGNAL:
        raise RefusedError(
            f"{field} {shown(signal)} is out of range (at least {MIN_SIGNAL})", field
        )
    if signal > 0 and signal not in _VALID_SIGNALS:
        raise RefusedError(f"{field} {shown(signal)} is not a signal on this system", field)
    return signal


def check_scope_id(scope_id: Any) -> str:
    """The scope id, if ``request_text``'s rule allows it (the one HTTP's schema applies)."""
    problem = scope_id_problem(scope_id)
    if problem is not None:
        raise RefusedError(problem, "scope_id")
    return str(scope_id)


def check_expiration(expiration_time: Any, now: float) -> float:
    if isinstance(expiration_time, bool) or not isinstance(expiration_time, int | float):
        raise RefusedError(
            f"expiration_time must be a number, got {shown(expiration_time)}", "expiration_time"
        )
    try:
        # An integer of 400 digits (valid JSON) has no float: refused, never an OverflowError.
        finite = math.isfinite(expiration_time)
    except OverflowError:
        finite = False
    if not finite:
        raise RefusedError(
            "expiration_time must be a finite number of unix seconds", "expiration_time"
        )
    if expiration_time > now + MAX_DEADLINE_SECONDS:
        raise RefusedError(
            f"deadline is more than {MAX_DEADLINE_SECONDS // 86400} days away "
            f"(expiration_time {expiration_time!r} is unix seconds)",
            "expiration_time",
        )
    return float(expiration_time)


def check_request(
    signaller: ProcessSignaller, request: ArmRequest, origin: Origin, now: float
) -> tuple[float, int]:
    """Every check that needs no look at the process; returns the expiration time (a
    float) and the signal. The server's own process and its ancestors may hold
    observe-only timers (as torch's tests do in-process) if ``origin`` allows it."""
    pid, signal = request.pid, request.signal
    refusal = signaller.refusal(pid)
    if refusal is not None and not (
        origin.may_observe_self and pid in signaller.protected and observe_only(signal)
    ):
        raise RefusedError(refusal)
    check_scope_id(request.scope_id)
    expiration = check_expiration(request.expiration_time, now)
    checked_signal = check_signal(signal)
    dump_signal = request.dump_signal
    if dump_signal is not None and check_signal(dump_signal, "dump_signal") <= 0:
        raise RefusedError("dump_signal must be a signal number > 0", "dump_signal")
    return expiration, checked_signal


def not_own_process(requester: str, pid: int, uid: int | None) -> RefusedError:
    """The refusal of a request for a process of another user (uid ``uid``)."""
    return RefusedError(
        f"{requester} may only arm timers for its own processes; pid {pid} belongs to uid {uid}",
        "pid",
        kind="forbidden",
    )
