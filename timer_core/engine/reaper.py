"""The engine's face: the requests that arm timers, and the step that reaps them.

Requests (acquire, extend, release) cost O(log n) and wake the reaper's thread only
when they change the earliest deadline. The thread sleeps until that deadline, so kill
latency does not depend on how often requests are polled. Each public step (``step``,
``worker_exited``) is callable directly, so tests drive the engine with a
``ManualClock`` and no sleeps.

A Reaper holds a ``TimerBook`` (the live timers under one lock, what is due when, the
releases and the reads, which it offers as its own); it decides what may be armed
(``admission``: the checks, whose process it is) and acts on what falls due
(``ExpiryHandler``), on a thread of its own (``ReaperLoop``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from .. import log_names
from . import snapshot
from .admission import RefusedError, check_request, not_own_process
from .arm_request import LIBRARY, ArmRequest, Origin
from .capturer import Capturer
from .clock import Clock, SystemClock
from .event_details import Ended
from .events import EventBus, Listener
from .expiry import DEFAULT_OVERDUE_MARGIN, ExpiryHandler
from .job_incidents import JobIncidents
from .kill_outcomes import WorkerKiller
from .kill_watch import KillWatch
from .labels import NO_LABELS, Labels, read_labels
from .process import ProcessIdentity, ProcessSignaller, identify
from .reaper_loop import LoopHealth, ReaperLoop
from .states import EventKind
from .timer_book import TimerBook
from .timers import LiveTimer, Timer
from .unkillable import UnkillableWatch

__all__ = ["Reaper"]

logger = logging.getLogger(log_names.REAPER)


class Reaper:
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        signaller: ProcessSignaller | None = None,
        bus: EventBus | None = None,
        escalate_after: float | None = 10.0,
        signal_children: bool = False,
        first_timer_id: int = 1,
        timer_ids: Callable[[], int] | None = None,
        watch_exits: bool = True,
        identify_process: Callable[[int], ProcessIdentity | None] = identify,
        capturer: Capturer | None = None,
        max_timers_per_uid: int | None = None,
        overdue_margin: float = DEFAULT_OVERDUE_MARGIN,
        node: str = "",
        labels_of: Callable[[int], Labels] = read_labels,
        incident_window: float | None = None,
        unkillable_after: float | None = None,
    ) -> None:
        """``incident_window`` (seconds) turns incidents on: the first expiry of a
        job's timer captures the stacks of all the job's live ranks here before any
        signal to the job, and expiries within the window after it join that incident.
        ``labels_of`` reads a worker's job and rank (its environment, by default).
        ``unkillable_after`` (seconds) turns on the watch for workers still alive that
        long after their SIGKILL (``unkillable`` events)."""
        self.book = book = TimerBook(
            clock=clock or SystemClock(),
            bus=bus or EventBus(),
            first_timer_id=first_timer_id,
            timer_ids=timer_ids,
            watch_exits=watch_exits,
            max_timers_per_uid=max_timers_per_uid,
            node=node,
            earliest_moved=lambda: self._loop.wake(),
        )
        # The book's state, changes and reads are the Reaper's own: its face to the sources.
        self.clock = book.clock
        self.bus = book.bus
        self.node = book.node
        self.user_share = book.user_share
        self.release = book.release
        self.release_id = book.release_id
        self.clear_worker = book.clear_worker
        self.worker_exited = book.worker_exited
        self.emit_refused = book.emit_refused
        self.active = book.active
        self.expired_by_worker = book.expired_by_worker
        self.soonest = book.soonest
        self.live_timers = book.live_timers
        self.active_count = book.active_count
        self.heap_size = book.heap_size
        self.signaller = signaller or ProcessSignaller()
        self._identify = identify_process
        self._labels_of = labels_of
        self._loop = ReaperLoop(self.step, book.lock, self.clock)
        # Due kills not acted on within the budget plus the margin (health, metrics).
        self.kill_watch = KillWatch(
            self.clock,
            budget=capturer.budget if capturer is not None else 0.0,
            margin=overdue_margin,
            heap=book.heap_entries,
            live=book.live_by_id,
        )
        # Workers still alive ``unkillable_after`` seconds after their SIGKILL.
        self.unkillable = (
            UnkillableWatch(
                self.clock,
                unkillable_after,
                book.events.timer,
                identify_process=identify_process,
            )
            if unkillable_after is not None
            else None
        )
        killer = WorkerKiller(
            self.clock,
            self.signaller,
            self.kill_watch,
            emit=book.events.timer,
            schedule=book.schedule,
            escalate_after=escalate_after,
            signal_children=signal_children,
            sigkilled=self.unkillable.sigkilled if self.unkillable is not None else None,
        )
        self.expiry = ExpiryHandler(
            killer,
            identify_process=identify_process,
            capturer=capturer,
            incidents=(
                JobIncidents(incident_window, book.job_members, book.events.incident)
                if incident_window is not None
                else None
            ),
        )
        # Reads for many readers (the dashboard): scanned outside the lock, within a budget.
        self.reader = snapshot.TimerReader(self.live_timers)

    def add_listener(self, listener: Listener) -> None:
        self.bus.add_listener(listener)

    # ---- requests that arm ---------------------------------------------------------------

    def acquire(self, request: ArmRequest, origin: Origin = LIBRARY) -> tuple[Timer, bool]:
        """Arm a timer, or move the deadline of the active one for (pid, scope_id).

        Returns the timer and whether it was created (False: a heartbeat).
        Raises RefusedError, after emitting a ``refused`` event, if it must not be armed.
        With the ``origin``'s ``owner_uid``, only a process whose real uid is that may be
        targeted. The request's own ``labels`` override those read from the worker's
        environment (read once per worker, and only once the caller may act on it).
        """
        pid = request.pid
        try:
            expiration_time, signal = check_request(
                self.signaller, request, origin, self.clock.time()
            )
            known = self.book.known_identity(pid)
            identity = known or self._identify(pid)
            if identity is None:
                raise RefusedError(f"no process with pid {pid} is running on this host")
            owner_uid = origin.owner_uid
            if owner_uid is not None and identity.uid != owner_uid:
                raise not_own_process(origin.describe(), pid, identity.uid)
            if known is None:
                identity = dataclasses.replace(identity, labels=self._labels_of(pid))
            return self.book.arm(identity, request, expiration_time, signal, origin.source)
        except RefusedError as error:
            self.book.refuse(request, origin, error)
            raise

    def apply(self, request: ArmRequest, origin: Origin = LIBRARY) -> bool:
        """Apply one request in torch's convention: a negative ``expiration_time``
        releases, anything else arms or heartbeats (as ``release`` and ``acquire``).
        False if refused (already logged and emitted as a ``refused`` event)."""
        try:
            if request.is_release:
                self.release(request.pid, request.scope_id, origin)
            else:
                self.acquire(request, origin)
            return True
        except RefusedError:
            return False

    def restore(
        self,
        timer_id: int,
        identity: ProcessIdentity,
        request: ArmRequest,
        origin: Origin,
        *,
        acquired_at: float,
    ) -> Timer | None:
        """Re-arm a timer recorded before a restart, with its original identity (whose
        pid is the ``request``'s) and its recorded labels (the ``request``'s).

        If the recorded process is gone (or its pid reused), the timer ends with
        ``worker_gone`` instead. A deadline already past fires on the next step.
        Construct the reaper with ``first_timer_id`` above every restored id (or with
        ``timer_ids`` that never repeat a recorded one).
        """
        if not identity.matches(self._identify(identity.pid)):
            stale = LiveTimer(
                timer_id,
                identity,
                request.scope_id,
                request.signal,
                origin.source,
                acquired_at,
                request.expiration_time,
                0.0,
                labels=request.labels or NO_LABELS,
                node=self.node,
            )
            expired = request.expiration_time <= self.clock.time()
            why = "worker exited while the service was down"
            gone = Ended(why, before_deadline=not expired)
            self.book.events.timer(EventKind.WORKER_GONE, stale, gone)
            return None
        # The process's own labels, read once per worker as acquire reads them: its later
        # scopes are labelled as before the restart (the recorded ones still win here).
        known = self.book.known_identity(identity.pid)
        if known is None or not known.matches(identity):
            identity = dataclasses.replace(identity, labels=self._labels_of(identity.pid))
        else:
            identity = known
        view, _ = self.book.arm(
            identity,
            request,
            request.expiration_time,
            request.signal,
            origin.source,
            timer_id,
            acquired_at,
        )
        return view

    def signal_now(self, pid: int, signum: int) -> bool:
        """Signal a worker at once (torch's ``_reap_worker``), with the same safety
        checks as a reap. True when delivered or the worker is already gone."""
        refusal = self.signaller.refusal(pid)
        if refusal is not None:
            logger.error("not signalling pid %r: %s", pid, refusal)
            return True
        identity = self._identify(pid)
        if identity is None:
            return True
        outcome = self.signaller.send(identity, signum)
        return outcome.delivered or outcome.status == "gone"

    # ---- reaping -------------------------------------------------------------------------

    def step(self) -> float | None:
        """Reap everything due now. Returns the next due time (monotonic), or None."""
        due, next_due = self.book.take_due(self.clock.monotonic())
        self.expiry.handle(due)
        return next_due

    def start(self) -> None:
        if self._loop.started:
            return
        self.kill_watch.origin = self.clock.monotonic()  # restored deadlines are due now
        self.bus.start()
        self.book.workers.start()
        if self.unkillable is not None:
            self.unkillable.start()
        self._loop.start()

    def restart_loop(self) -> bool:
        """Start a new reaper loop thread if the old one died (the supervisor's remedy).
        Timers live in the engine, not the thread, so nothing is lost. False if it runs."""
        return self._loop.restart()

    def stop(self) -> None:
        self._loop.stop()
        # Expiries still capturing finish (within their budget) and emit before the drain.
        self.expiry.shutdown()
        if self.unkillable is not None:
            self.unkillable.stop()
        self.book.workers.stop()
        self.bus.drain()
        self.bus.stop()

    def is_running(self) -> bool:
        return self._loop.is_running()

    def health(self, stall_seconds: float) -> LoopHealth:
        """Is the loop running, and has it run within ``stall_seconds`` (on this
        reaper's clock, the one the loop stamps its runs with)?"""
        running = self.is_running()
        since_loop = self.clock.monotonic() - self.last_loop_monotonic
        problem = None
        if not running:
            problem = "the reaper thread is not running"
        elif since_loop > stall_seconds:
            problem = f"the reaper loop has stalled for {since_loop:.1f}s"
        return LoopHealth(running, since_loop, self.last_lag_seconds, problem)

    @property
    def last_loop_monotonic(self) -> float:
        """When the loop last stepped: a stalled reaper shows here."""
        return self._loop.last_loop_monotonic

    @property
    def last_lag_seconds(self) -> float:
        """How late the loop woke for its last due entry."""
        return self._loop.last_lag_seconds
