"""What happens when deadlines pass: capture the stack, signal the worker (once,
with the signal of its earliest expired timer), signal its children if asked,
escalate to SIGKILL if it survives, and record each outcome.

With stack capture on, each worker's expiry runs on a small thread pool, so one
slow capture never holds up another worker's kill; each capture gets what is
left of the budget counted from the deadline, so a queued one is cut short
rather than making its kill late.

Every outcome goes through ``_outcome``, which emits its event and logs one line
(INFO for a signal sent or an expiry observed, WARNING for a kill that failed):
the one place the watchdog says what it did, for the service and the library
servers alike.
"""

from __future__ import annotations

import logging
import signal as signal_module
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .clock import Clock
from .events import EventKind
from .process import ProcessIdentity, ProcessSignaller
from .stack_capture import CapturedStack, StackCapturer
from .timers import Escalation, LiveTimer

__all__ = ["Emit", "ExpiryHandler", "outcome_line", "signal_name"]

logger = logging.getLogger(__name__)

# emit(kind, timer, state, stack=None, **detail)
Emit = Callable[..., None]

_CAPTURE_THREADS = 8

# What the log line says happened, per event kind.
_VERBS = {
    EventKind.KILLED: "killed",
    EventKind.EXPIRED: "expired",
    EventKind.WORKER_GONE: "expired, worker already gone",
    EventKind.KILL_FAILED: "kill failed",
    EventKind.ESCALATED: "escalated to SIGKILL",
}


def signal_name(signum: int) -> str:
    """``9 (SIGKILL)``; a number alone when the system has no name for it."""
    try:
        return f"{signum} ({signal_module.Signals(signum).name})"
    except ValueError:
        return str(signum)


def outcome_line(
    kind: str, timer: LiveTimer, late: float, stack: CapturedStack | None, detail: dict[str, Any]
) -> str:
    """One log line for an expiry outcome. The scope and the reason are repr()'d: a
    scope is whatever the worker sent, and a newline in it must not forge a line."""
    stack_text = f"{stack.method} ({stack.seconds:.3f}s)" if stack is not None else "none"
    line = (
        f"timer {timer.id} {_VERBS.get(kind, kind)}: pid={timer.identity.pid} "
        f"scope={timer.scope_id!r} signal={signal_name(timer.signal)} source={timer.source} "
        f"late_ms={1000 * late:.1f} stack={stack_text}"
    )
    for key in ("children", "sigkilled"):
        if detail.get(key):
            line += f" {key}={detail[key]}"
    if "reason" in detail:
        line += f" reason={str(detail['reason'])!r}"
    return line


class ExpiryHandler:
    def __init__(
        self,
        *,
        clock: Clock,
        signaller: ProcessSignaller,
        emit: Emit,
        schedule: Callable[[float, Escalation], None],
        identify_process: Callable[[int], ProcessIdentity | None],
        escalate_after: float | None,
        signal_children: bool,
        capturer: StackCapturer | None,
    ) -> None:
        self.clock = clock
        self.signaller = signaller
        self.escalate_after = escalate_after
        self.signal_children = signal_children
        self.capturer = capturer
        self._emit = emit
        self._schedule = schedule
        self._identify = identify_process
        self._pool = (
            ThreadPoolExecutor(_CAPTURE_THREADS, thread_name_prefix="timer-expiry")
            if capturer is not None
            else None
        )

    def handle(self, due: list[LiveTimer | Escalation]) -> None:
        """Act on everything the reaper found due, in deadline order."""
        by_worker: dict[ProcessIdentity, list[LiveTimer]] = {}
        for item in due:
            if isinstance(item, LiveTimer):
                by_worker.setdefault(item.identity, []).append(item)
            else:
                self._guarded(self._escalate, item)
        for timers in by_worker.values():
            if self._pool is not None:
                self._pool.submit(self._guarded, self._expire_worker, timers)
            else:
                self._guarded(self._expire_worker, timers)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _guarded(self, action: Callable[[Any], None], argument: Any) -> None:
        try:
            action(argument)
        except Exception:
            logger.exception("reaping failed for %r", argument)

    def _capture(self, timers: list[LiveTimer]) -> CapturedStack | None:
        if self.capturer is None:
            return None
        first = timers[0]
        # The budget counts from the deadline: a capture that waited its turn gets less.
        left = self.capturer.budget - (self.clock.monotonic() - first.deadline)
        if left <= 0:
            return None
        dump_signal = next((t.dump_signal for t in timers if t.dump_signal), None)
        return self.capturer.capture(
            first.identity, dump_signal, give_up_at=time.monotonic() + left
        )

    def _outcome(
        self,
        kind: str,
        timer: LiveTimer,
        state: str,
        stack: CapturedStack | None,
        late: float,
        **detail: Any,
    ) -> None:
        """Emit what happened to an expired timer, and log it: once, here."""
        failed = kind == EventKind.KILL_FAILED or (
            kind == EventKind.ESCALATED and not detail.get("sigkilled")
        )
        if logger.isEnabledFor(logging.WARNING if failed else logging.INFO):
            line = outcome_line(kind, timer, late, stack, detail)
            logger.log(logging.WARNING if failed else logging.INFO, "%s", line)
        self._emit(kind, timer, state, stack, **detail)

    def _expire_worker(self, timers: list[LiveTimer]) -> None:
        """One worker's expired timers: the first with a signal > 0 signals it."""
        stack = self._capture(timers)
        signalled_by: int | None = None
        for timer in timers:
            latency = self.clock.monotonic() - timer.deadline
            if timer.signal <= 0:
                self._outcome(
                    EventKind.EXPIRED,
                    timer,
                    "expired",
                    stack,
                    latency,
                    reason="observe only",
                    latency=latency,
                )
            elif signalled_by is not None:
                self._outcome(
                    EventKind.KILLED,
                    timer,
                    "killed",
                    stack,
                    latency,
                    latency=latency,
                    reason=f"worker already signalled for timer {signalled_by}",
                )
            elif self._signal(timer, stack):
                signalled_by = timer.id

    def _signal(self, timer: LiveTimer, stack: CapturedStack | None) -> bool:
        children = self.signaller.children(timer.identity) if self.signal_children else []
        outcome = self.signaller.send(timer.identity, timer.signal)
        latency = self.clock.monotonic() - timer.deadline
        if not outcome.delivered:
            kind = EventKind.WORKER_GONE if outcome.status == "gone" else EventKind.KILL_FAILED
            self._outcome(kind, timer, "expired", stack, latency, reason=outcome.reason)
            return False
        for child in children:
            self.signaller.send(child, timer.signal)
        self._outcome(
            EventKind.KILLED,
            timer,
            "killed",
            stack,
            latency,
            latency=latency,
            children=[child.pid for child in children],
        )
        if timer.signal != signal_module.SIGKILL and self.escalate_after is not None:
            due = self.clock.monotonic() + self.escalate_after
            self._schedule(due, Escalation(timer, (timer.identity, *children)))
        return True

    def _escalate(self, escalation: Escalation) -> None:
        worker = escalation.targets[0]
        if not worker.matches(self._identify(worker.pid)):
            return  # the first signal did its job
        killed = [
            target.pid
            for target in escalation.targets
            if self.signaller.send(target, signal_module.SIGKILL).delivered
        ]
        self._outcome(
            EventKind.ESCALATED,
            escalation.timer,
            "killed",
            None,
            self.clock.monotonic() - escalation.timer.deadline,
            reason=f"still alive {self.escalate_after}s after signal {escalation.timer.signal}",
            sigkilled=killed,
        )
