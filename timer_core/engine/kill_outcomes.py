"""Signal one worker whose timers expired, and record what happened, whatever fails.

``WorkerKiller.expire`` signals the worker once, with the signal of its earliest
expired timer (and its children, if asked), and records one outcome per timer.
``WorkerKiller.after_error`` finishes the job when an exception cut it short: the
worker is signalled anyway if it was not yet, and every timer without an outcome
gets one (``killed``, ``worker_gone`` or ``kill_failed`` with the reason), so no due
timer vanishes from memory while the database still says ``active``.

Every outcome goes through ``outcome``, which logs one line (INFO for a signal sent or
an expiry observed, WARNING for a kill that failed) and emits its event: the one
place the watchdog says what it did, for the service and the library servers alike.
The lines keep the ``timer_core.expiry`` logger they always had.
"""

from __future__ import annotations

import logging
import signal as signal_module
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

from .. import log_names
from .capturer import CapturedStack
from .clock import Clock
from .emitter import Emit
from .event_details import Escalated, EventDetail, Kill, NoKill, captured_stack
from .kill_watch import KillWatch, describe_error
from .process import ProcessIdentity, ProcessSignaller, SignalOutcome, signal_name
from .states import EventKind
from .timers import Escalation, LiveTimer

__all__ = ["Progress", "WorkerKiller", "outcome_line"]

logger = logging.getLogger(log_names.EXPIRY)

# What the log line says happened, per event kind.
_VERBS = {
    EventKind.KILLED: "killed",
    EventKind.EXPIRED: "expired",
    EventKind.WORKER_GONE: "expired, worker already gone",
    EventKind.KILL_FAILED: "kill failed",
    EventKind.ESCALATED: "escalated to SIGKILL",
}


def outcome_line(kind: EventKind, timer: LiveTimer, late: float, detail: EventDetail) -> str:
    """One log line for an expiry outcome. The scope and the reason are repr()'d: a
    scope is whatever the worker sent, and a newline in it must not forge a line."""
    stack = captured_stack(detail)
    stack_text = f"{stack.method} ({stack.seconds:.3f}s)" if stack is not None else "none"
    line = (
        f"timer {timer.id} {_VERBS.get(kind, kind)}: pid={timer.identity.pid} "
        f"scope={timer.scope_id!r} signal={signal_name(timer.signal)} source={timer.source} "
        f"late_ms={1000 * late:.1f} stack={stack_text}"
    )
    json = detail.as_json()
    for key in ("children", "sigkilled"):
        if json.get(key):
            line += f" {key}={json[key]}"
    if "reason" in json:
        line += f" reason={str(json['reason'])!r}"
    return line


class Progress:
    """How far one worker's expiry got: which timers have their outcome recorded, and
    which timer's signal was delivered (so an error after it does not signal again)."""

    __slots__ = ("settled", "signalled_by")

    def __init__(self) -> None:
        self.settled: set[int] = set()
        self.signalled_by: int | None = None


def _undelivered(outcome: SignalOutcome) -> EventKind:
    """The event kind of a signal that was not delivered."""
    return EventKind.WORKER_GONE if outcome.status == "gone" else EventKind.KILL_FAILED


# eq=False: one killer per engine, compared by identity.
@dataclass(eq=False)
class WorkerKiller:
    # What it works with, given in this order; then its settings, by name.
    clock: Clock
    signaller: ProcessSignaller
    watch: KillWatch
    _: KW_ONLY
    # The timer's event, for the listeners (``EventEmitter.timer``).
    emit: Emit
    # A SIGKILL for later (due on the monotonic clock), should the worker survive.
    schedule: Callable[[float, Escalation], None]
    escalate_after: float | None
    signal_children: bool
    # Told of each worker sent SIGKILL (``UnkillableWatch.sigkilled``): it only queues.
    sigkilled: Callable[[LiveTimer], None] | None = None

    def expire(
        self,
        timers: list[LiveTimer],
        stack: CapturedStack | None,
        stack_note: str | None,
        progress: Progress,
    ) -> None:
        """One worker's expired timers: the first with a signal > 0 signals it.
        ``stack_note`` (why there is no stack) goes into the first outcome."""
        for timer in timers:
            latency = self._late(timer)
            if timer.signal <= 0:
                observed = NoKill("observe only", latency, stack=stack, stack_note=stack_note)
                self.outcome(EventKind.EXPIRED, timer, latency, progress, observed)
            elif progress.signalled_by is not None:
                kill = Kill(latency, signalled_by=progress.signalled_by, stack=stack)
                self.outcome(EventKind.KILLED, timer, latency, progress, kill)
            else:
                self._signal(timer, stack, stack_note, progress)

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        """``signaller.send``, with an exception turned into a failed outcome."""
        try:
            return self.signaller.send(identity, signum)
        except Exception as error:
            return SignalOutcome(False, "failed", self.watch.error(error, "signalling"))

    def _signal(
        self,
        timer: LiveTimer,
        stack: CapturedStack | None,
        stack_note: str | None,
        progress: Progress,
    ) -> None:
        children: list[ProcessIdentity] = []
        children_error = None
        if self.signal_children:
            try:
                children = self.signaller.children(timer.identity)
            except Exception as error:  # the worker itself is signalled regardless
                children_error = self.watch.error(error, "listing children")
        outcome = self.send(timer.identity, timer.signal)
        latency = self._late(timer)
        if not outcome.delivered:
            failed = NoKill(outcome.reason, None, children_error, stack, stack_note)
            self.outcome(_undelivered(outcome), timer, latency, progress, failed)
            return
        progress.signalled_by = timer.id
        for child in children:
            self.send(child, timer.signal)
        kill = Kill(
            latency,
            children=tuple(child.pid for child in children),
            children_error=children_error,
            stack=stack,
            stack_note=stack_note,
        )
        self.outcome(EventKind.KILLED, timer, latency, progress, kill)
        if timer.signal == signal_module.SIGKILL:
            self.sent_sigkill(timer)
        elif self.escalate_after is not None:
            due = self.clock.monotonic() + self.escalate_after
            self.schedule(due, Escalation(timer, (timer.identity, *children)))

    def after_error(self, timers: list[LiveTimer], progress: Progress, error: Exception) -> None:
        """An exception cut a worker's expiry short: signal it anyway, and give every
        timer without an outcome one. Never raises."""
        reason = self.watch.error(error, "expiry")
        logger.error(
            "the expiry of timer(s) %s failed (%s); signalling anyway",
            ", ".join(str(timer.id) for timer in timers),
            reason,
            exc_info=error,
        )
        for timer in timers:
            if timer.id in progress.settled:
                continue
            try:
                self._settle_after_error(timer, progress, reason)
            except Exception as again:
                # Even recording failed (the event bus itself?): counted and logged;
                # the database still says active, so a restart re-arms the timer.
                self.watch.error(again, "recording an outcome")
                logger.critical(
                    "timer %d: no outcome could be recorded (%s)", timer.id, describe_error(again)
                )

    def _settle_after_error(self, timer: LiveTimer, progress: Progress, reason: str) -> None:
        latency = self._late(timer)
        if timer.signal <= 0:
            observed = NoKill(f"observe only ({reason})")
            self.outcome(EventKind.EXPIRED, timer, latency, progress, observed)
            return
        if progress.signalled_by is None:
            outcome = self.send(timer.identity, timer.signal)
            if not outcome.delivered:
                failed = NoKill(f"{reason}; then the signal: {outcome.reason}")
                self.outcome(_undelivered(outcome), timer, latency, progress, failed)
                return
            progress.signalled_by = timer.id
            if timer.signal == signal_module.SIGKILL:
                self.sent_sigkill(timer)
        if progress.signalled_by == timer.id:
            # Signalled: a kill like any other, with a note.
            kill = Kill(latency, error=reason)
        else:
            kill = Kill(latency, signalled_by=progress.signalled_by)
        self.outcome(EventKind.KILLED, timer, latency, progress, kill)

    def sent_sigkill(self, timer: LiveTimer) -> None:
        """Tell the unkillable watch that ``timer``'s worker was sent SIGKILL. Never
        raises: the kill is done, and what follows it is not worth losing it."""
        if self.sigkilled is None:
            return
        try:
            self.sigkilled(timer)
        except Exception as error:
            self.watch.error(error, "watching for an unkillable worker")

    def _late(self, timer: LiveTimer) -> float:
        """How far past its deadline ``timer`` is now, in seconds."""
        return self.clock.monotonic() - timer.deadline_monotonic

    def outcome(
        self,
        kind: EventKind,
        timer: LiveTimer,
        late: float,
        progress: Progress | None,
        detail: EventDetail,
    ) -> None:
        """Log what happened to an expired timer, and emit it: once, here."""
        failed = kind == EventKind.KILL_FAILED or (
            isinstance(detail, Escalated) and not detail.sigkilled
        )
        level = logging.WARNING if failed else logging.INFO
        try:
            if logger.isEnabledFor(level):
                logger.log(level, "%s", outcome_line(kind, timer, late, detail))
        except Exception as error:  # a log line is not worth a lost outcome
            self.watch.error(error, "logging an outcome")
        self.emit(kind, timer, detail)
        if progress is not None:
            progress.settled.add(timer.id)
