"""What happens when deadlines pass: capture the stack, signal the worker (once,
with the signal of its earliest expired timer), signal its children if asked,
escalate to SIGKILL if it survives, and record each outcome.

A kill never waits on anything unbounded:

- With stack capture on, each worker's capture starts at once on a thread of its own
  (``CaptureRunner``), and its kill runs on a pool of kill threads that wait for
  the capture only until the budget, counted from the deadline, runs out. A capture
  that hangs is abandoned, gives its slot back, and the kill goes ahead without it.
- Without capture (the library servers), the kill runs on the reaper's thread.
- Any exception on the way (capture, identity check, signalling, logging, emitting)
  is counted in the ``KillWatch``, and the worker is signalled anyway or the timer
  ends ``kill_failed`` with the reason (``WorkerKiller.after_error``): a due timer
  never vanishes silently.
- No fallback to ``kill(2)`` by pid when no pidfd can be had (EMFILE): the pid,
  checked a moment before, may name another process by the time ``kill(2)`` runs,
  and a root service must never signal a reused pid. The timer ends ``kill_failed``
  with the reason instead: in the log, the event log, the metrics and the alerts.

A job's first expiry (with incidents on) is handled as one: the stacks of all the
job's live processes here are captured at once, within the same budget, and only then
is any of its expired workers signalled (``JobIncidents``). Expiries of the job that
come while that capture runs wait for it, each within its own budget, and take the
stack it got.

Every due timer is registered with the ``KillWatch`` before anything else happens to
it and settled after its outcome, so one stuck anywhere on the way shows as an
overdue kill.
"""

from __future__ import annotations

import logging
import signal as signal_module
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import log_names
from .capture_runner import CaptureRunner, PendingCapture
from .capturer import CapturedStack, Capturer, RankStack
from .event_details import Escalated
from .job_incidents import JobCapture, JobIncidents, JobKey, job_key
from .kill_outcomes import Progress, WorkerKiller
from .kill_watch import watch_key
from .process import ProcessIdentity
from .states import EventKind
from .timers import Escalation, LiveTimer

__all__ = ["DEFAULT_OVERDUE_MARGIN", "ExpiryHandler"]

logger = logging.getLogger(log_names.EXPIRY)

# Kill threads: each waits at most for the budget (its capture), then signals. As many
# as captures may be under way (``CaptureRunner.max_live``; a kill whose capture was not
# started waits for nothing): one user's kills waiting on their hung captures (at most
# its share, half of them) then never hold every kill thread, and another user's kill
# never queues behind them. The pool starts its threads only as they are needed.
# When nothing says otherwise: how late, past the budget, a kill counts as overdue.
DEFAULT_OVERDUE_MARGIN = 1.0


class ExpiryHandler:
    def __init__(
        self,
        killer: WorkerKiller,
        *,
        identify_process: Callable[[int], ProcessIdentity | None],
        capturer: Capturer | None,
        incidents: JobIncidents | None = None,
    ) -> None:
        """``killer`` signals and records; its clock and watch are the expiry's too.
        With ``incidents``, a job's first expiry captures all its ranks first."""
        self.killer = killer
        self.clock = killer.clock
        self.watch = killer.watch
        self.capturer = capturer
        self._identify = identify_process
        self.incidents = incidents
        self.captures = CaptureRunner(capturer) if capturer is not None else None
        self._pool = (
            ThreadPoolExecutor(self.captures.max_live, thread_name_prefix="timer-expiry")
            if self.captures is not None
            else None
        )

    @property
    def budget(self) -> float:
        """How long after its deadline a kill may wait for its stack."""
        return self.capturer.budget if self.capturer is not None else 0.0

    def handle(self, due: list[LiveTimer | Escalation]) -> None:
        """Act on everything the reaper found due, in deadline order."""
        by_worker: dict[ProcessIdentity, list[LiveTimer]] = {}
        escalations: list[Escalation] = []
        now = self.clock.monotonic()
        # Registered first: from here until settled, the watch sees each one.
        for item in due:
            if isinstance(item, LiveTimer):
                self.watch.begin(watch_key(item), item.deadline_monotonic)
                by_worker.setdefault(item.identity, []).append(item)
            else:
                self.watch.begin(watch_key(item), now)
                escalations.append(item)
        for escalation in escalations:
            self._escalate_safely(escalation)
        opening: dict[JobKey, list[list[LiveTimer]]] = {}  # job → its workers due now
        for timers in by_worker.values():
            job_id = self._opens_incident(timers, opening, now)
            if job_id is not None:
                opening.setdefault(job_id, []).append(timers)
                continue
            job_capture = self._job_capture_running(timers)
            if job_capture is not None:
                self._run(self._expire_after_job_capture, timers, job_capture)
                continue
            pending = self._start_capture(timers)
            self._run(self._expire_safely, timers, pending)
        for job, workers in opening.items():
            assert self.incidents is not None
            job_capture = self.incidents.begin(job)
            started = self._start_job_capture(workers)
            self._run(self._expire_job_safely, job, workers, started, job_capture)

    def _run(self, task: Callable[..., None], *args: Any) -> None:
        """``task`` on a kill thread, or here when there is none (library servers,
        no thread to be had, shutting down)."""
        if self._pool is not None:
            try:
                self._pool.submit(task, *args)
                return
            except RuntimeError:
                pass
        task(*args)

    def shutdown(self) -> None:
        # Bounded: each kill waits at most for its budget. Abandoned captures are
        # daemon threads and are not waited for.
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ---- the stack -----------------------------------------------------------------------

    def _start_capture(
        self, timers: list[LiveTimer], budget_from: LiveTimer | None = None
    ) -> PendingCapture | None:
        """Start capturing the stack of ``timers``' worker, within the budget counted
        from the deadline of ``budget_from`` (default: the first of ``timers``)."""
        if self.captures is None:
            return None
        first = timers[0]
        # The budget counts from the deadline: an expiry found late gets less.
        deadline = (budget_from or first).deadline_monotonic
        left = self.budget - (self.clock.monotonic() - deadline)
        if left <= 0:
            return None
        dump_signal = next((t.dump_signal for t in timers if t.dump_signal), None)
        return self.captures.start(first.identity, dump_signal, time.monotonic() + left)

    def _await_capture(
        self, pending: PendingCapture | None
    ) -> tuple[CapturedStack | None, str | None]:
        """The stack (or None), and what the outcome should say about a missing one."""
        if self.captures is None:
            return None, None
        if pending is None:
            return None, "no time left in the stack budget"
        try:
            stack, why = self.captures.wait(pending)
        except Exception as error:
            return None, self.watch.error(error, "waiting for the stack")
        return stack, (why if stack is None and why else None)

    # ---- a job's first expiry ------------------------------------------------------------

    def _opens_incident(
        self, timers: list[LiveTimer], opening: dict[JobKey, list[list[LiveTimer]]], now: float
    ) -> JobKey | None:
        """The job whose incident these timers open (or join, in this same step)."""
        if self.incidents is None:
            return None
        job = job_key(timers)
        if job is None:
            return None
        return job if job in opening or self.incidents.opens(job, now) else None

    def _job_capture_running(self, timers: list[LiveTimer]) -> JobCapture | None:
        """The capture of these timers' job, if one is still running."""
        if self.incidents is None:
            return None
        job = job_key(timers)
        return self.incidents.capturing(job) if job is not None else None

    def _start_job_capture(
        self, workers: list[list[LiveTimer]]
    ) -> list[tuple[LiveTimer, bool, PendingCapture | None]]:
        """Start capturing every live process of the job here at once, the expiring
        workers and their peers alike, all to give up when the earliest deadline's
        budget runs out: (a timer of the process, whether it is expiring, its capture)."""
        assert self.incidents is not None
        expiring = [timers[0] for timers in workers]
        seen = {timer.identity for timer in expiring}
        job = job_key(expiring)
        assert job is not None
        peers: list[LiveTimer] = []
        for timer in self.incidents.members(job):
            if timer.identity not in seen:
                seen.add(timer.identity)
                peers.append(timer)
        earliest = min((t for timers in workers for t in timers), key=_deadline)
        started = []
        for timers in workers:
            started.append((timers[0], True, self._start_capture(timers, earliest)))
        for peer in peers:
            started.append((peer, False, self._start_capture([peer], earliest)))
        return started

    def _expire_job_safely(
        self,
        job: JobKey,
        workers: list[list[LiveTimer]],
        started: list[tuple[LiveTimer, bool, PendingCapture | None]],
        job_capture: JobCapture,
    ) -> None:
        """Wait for the job's captures (each within the budget), publish the incident,
        then expire its due workers. Never raises; every timer leaves the watch."""
        assert self.incidents is not None
        awaited = job_capture.stacks
        captures = []
        try:
            for timer, expiring, pending in started:
                stack, why = self._await_capture(pending)
                awaited[timer.identity] = (stack, why)
                note = "" if stack is not None else (why or "no stack")
                captures.append(RankStack(timer.snapshot(), stack, note, expiring))
            trigger = min((t for timers in workers for t in timers), key=_deadline)
            self.incidents.emit(trigger, tuple(captures))
        except Exception as error:  # the incident is evidence: the kills go ahead
            self.watch.error(error, f"the incident of job {job[1]!r}")
        finally:
            self.incidents.finish(job, job_capture)
        for timers in workers:
            self._expire_safely(timers, None, awaited.get(timers[0].identity))

    def _expire_after_job_capture(self, timers: list[LiveTimer], job_capture: JobCapture) -> None:
        """An expiry of a job whose capture is running: wait for it (no longer than this
        worker's own budget), then expire with the stack it took of this worker, or one
        of its own if it took none. Never raises; every timer leaves the watch."""
        awaited = None
        try:
            left = self.budget - (self.clock.monotonic() - timers[0].deadline_monotonic)
            job_capture.done.wait(max(0.0, left))
            awaited = job_capture.stacks.get(timers[0].identity)
            if awaited is None or awaited[0] is None:
                awaited = self._await_capture(self._start_capture(timers))
        except Exception as error:
            self.watch.error(error, "waiting for the job's capture")
        self._expire_safely(timers, None, awaited)

    # ---- one worker, one escalation ------------------------------------------------------

    def _expire_safely(
        self,
        timers: list[LiveTimer],
        pending: PendingCapture | None,
        awaited: tuple[CapturedStack | None, str | None] | None = None,
    ) -> None:
        """One worker's expiry, with its stack ``awaited`` already or still ``pending``;
        never raises, and every timer leaves the watch."""
        progress = Progress()
        try:
            stack, note = awaited if awaited is not None else self._await_capture(pending)
            self.killer.expire(timers, stack, note, progress)
        except Exception as error:
            self.killer.after_error(timers, progress, error)
        finally:
            for timer in timers:
                self.watch.settle(watch_key(timer))

    def _escalate_safely(self, escalation: Escalation) -> None:
        try:
            self._escalate(escalation)
        except Exception as error:
            reason = self.watch.error(error, "escalation")
            try:
                self.killer.outcome(
                    EventKind.ESCALATED,
                    escalation.timer,
                    self.clock.monotonic() - escalation.timer.deadline_monotonic,
                    None,
                    Escalated(f"escalation failed: {reason}", ()),
                )
            except Exception as again:
                self.watch.error(again, "recording an escalation")
                logger.critical("escalation of timer %d failed: %s", escalation.timer.id, reason)
        finally:
            self.watch.settle(watch_key(escalation))

    def _escalate(self, escalation: Escalation) -> None:
        worker = escalation.targets[0]
        if not worker.matches(self._identify(worker.pid)):
            return  # the first signal did its job
        timer = escalation.timer
        killed = [
            target.pid
            for target in escalation.targets
            if self.killer.send(target, signal_module.SIGKILL).delivered
        ]
        why = f"still alive {self.killer.escalate_after}s after signal {timer.signal}"
        self.killer.outcome(
            EventKind.ESCALATED,
            timer,
            self.clock.monotonic() - timer.deadline_monotonic,
            None,
            Escalated(why, tuple(killed)),
        )
        if killed[:1] == [worker.pid]:
            self.killer.sent_sigkill(timer)


def _deadline(timer: LiveTimer) -> float:
    return timer.deadline_monotonic
