"""The engine's face: the request API on the live timers, and the step that reaps them.

Requests (acquire, extend, release) cost O(log n) and wake the reaper's thread only
when they change the earliest deadline. The thread sleeps until that deadline, so kill
latency does not depend on how often requests are polled. Each public step (``step``,
``worker_exited``) is callable directly, so tests drive the engine with a
``ManualClock`` and no sleeps.

The Reaper decides what may be asked (``admission``: the checks; whose process it is)
and what happens to what falls due (``ExpiryHandler``). The timers themselves, and
what is due when, are kept in a ``TimerBook`` under one lock; the thread is a
``ReaperLoop``.
"""

from __future__ import annotations

import logging
import signal as signal_module
from collections.abc import Callable
from typing import Any

from . import snapshot
from .admission import RefusedError, check_request, not_own_process
from .capturer import Capturer
from .clock import Clock, SystemClock
from .emitter import EventEmitter
from .events import EventBus, EventKind, Listener
from .expiry import DEFAULT_OVERDUE_MARGIN, ExpiryHandler
from .kill_outcomes import WorkerKiller
from .kill_watch import KillWatch
from .process import ProcessIdentity, ProcessSignaller, identify
from .reaper_loop import ReaperLoop
from .timer_book import TimerBook
from .timers import LiveTimer, TimerView

__all__ = ["Reaper"]

# Named as before the move into engine/: operators filter on logger names.
logger = logging.getLogger("timer_core.reaper")


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
        watch_exits: bool = True,
        identify_process: Callable[[int], ProcessIdentity | None] = identify,
        capturer: Capturer | None = None,
        max_timers_per_uid: int | None = None,
        overdue_margin: float = DEFAULT_OVERDUE_MARGIN,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.signaller = signaller or ProcessSignaller()
        self.bus = bus or EventBus()
        self._events = EventEmitter(self.bus, self.clock)
        self._identify = identify_process
        self._book = TimerBook(
            clock=self.clock,
            events=self._events,
            wake=self._wake_loop,
            first_timer_id=first_timer_id,
            watch_exits=watch_exits,
            max_per_uid=max_timers_per_uid,
        )
        self._loop = ReaperLoop(self.step, self._book.lock, self.clock)
        # Due kills not acted on within the budget plus the margin (health, metrics).
        self.kill_watch = KillWatch(
            self.clock,
            budget=capturer.budget if capturer is not None else 0.0,
            margin=overdue_margin,
            heap=self._book.heap_entries,
            live=self._book.live,
        )
        killer = WorkerKiller(
            clock=self.clock,
            signaller=self.signaller,
            emit=self._events.timer,
            schedule=self._book.schedule,
            escalate_after=escalate_after,
            signal_children=signal_children,
            watch=self.kill_watch,
        )
        self.expiry = ExpiryHandler(killer, identify_process=identify_process, capturer=capturer)
        # Reads for many readers (the dashboard): scanned outside the lock, within a budget.
        self.reader = snapshot.TimerReader(self.live_timers)

    def add_listener(self, listener: Listener) -> None:
        self.bus.add_listener(listener)

    # ---- requests ------------------------------------------------------------------------

    def acquire(
        self,
        pid: int,
        scope_id: str,
        expiration_time: float,
        signal: int = signal_module.SIGKILL,
        *,
        source: str = "api",
        dump_signal: int | None = None,
        observe_protected: bool = True,
        owner_uid: int | None = None,
        requester: str = "",
    ) -> tuple[TimerView, bool]:
        """Arm a timer, or move the deadline of the active one for (pid, scope_id).

        Returns the timer and whether it was created (False: a heartbeat).
        Raises RefusedError, after emitting a ``refused`` event, if it must not be armed.
        The server's own process and its ancestors may hold observe-only timers (as
        torch's tests do in-process) unless ``observe_protected`` is False.
        With ``owner_uid``, only a process whose real uid is that may be targeted:
        ``requester`` (who asked, e.g. "uid 1001 over tcp …") goes into the refusal.
        """
        try:
            expiration_time, signal = check_request(
                self.signaller,
                pid,
                scope_id,
                expiration_time,
                signal,
                dump_signal,
                observe_protected=observe_protected,
            )
            identity = self._book.known_identity(pid) or self._identify(pid)
            if identity is None:
                raise RefusedError(f"no process with pid {pid} is running on this host")
            if owner_uid is not None and identity.uid != owner_uid:
                raise not_own_process(requester or f"uid {owner_uid}", pid, identity.uid)
            return self._book.arm(identity, scope_id, expiration_time, signal, source, dump_signal)
        except RefusedError as error:
            self.emit_refused(pid, scope_id, expiration_time, signal, source, error.reason)
            raise

    def apply(
        self,
        pid: int,
        scope_id: str,
        expiration_time: float,
        signal: int,
        *,
        source: str,
        dump_signal: int | None = None,
    ) -> bool:
        """Apply one request in torch's convention: a negative ``expiration_time``
        releases, anything else acquires. False if refused (already logged and
        emitted as a ``refused`` event)."""
        try:
            if isinstance(expiration_time, int | float) and expiration_time < 0:
                self.release(pid, scope_id, source=source)
            else:
                self.acquire(
                    pid, scope_id, expiration_time, signal, source=source, dump_signal=dump_signal
                )
            return True
        except RefusedError:
            return False

    def restore(
        self,
        timer_id: int,
        identity: ProcessIdentity,
        scope_id: str,
        expiration_time: float,
        signal: int,
        *,
        source: str,
        acquired_at: float,
        dump_signal: int | None = None,
    ) -> TimerView | None:
        """Re-arm a timer recorded before a restart, with its original identity.

        If the recorded process is gone (or its pid reused), the timer ends with
        ``worker_gone`` instead. A deadline already past fires on the next step.
        Construct the reaper with ``first_timer_id`` above every restored id.
        """
        if not identity.matches(self._identify(identity.pid)):
            stale = LiveTimer(
                timer_id, identity, scope_id, signal, source, acquired_at, expiration_time, 0.0
            )
            expired = expiration_time <= self.clock.time()
            self._events.timer(
                EventKind.WORKER_GONE,
                stale,
                "expired" if expired else "released",
                reason="worker exited while the service was down",
            )
            return None
        view, _ = self._book.arm(
            identity, scope_id, expiration_time, signal, source, dump_signal, timer_id, acquired_at
        )
        return view

    def release(
        self,
        pid: int,
        scope_id: str,
        *,
        source: str = "api",
        owner_uid: int | None = None,
        requester: str = "",
    ) -> TimerView | None:
        """End the active timer for (pid, scope_id); None if there is none. With
        ``owner_uid``, a timer whose worker belongs to another uid is not released:
        RefusedError (kind "forbidden"), after a ``refused`` event naming ``requester``."""
        return self._book.release((pid, scope_id), source, owner_uid, requester)

    def release_id(
        self,
        timer_id: int,
        *,
        source: str = "api",
        owner_uid: int | None = None,
        requester: str = "",
    ) -> TimerView | None:
        """As ``release``, by the timer's id."""
        return self._book.release(timer_id, source, owner_uid, requester)

    def clear_worker(self, pid: int, reason: str) -> list[TimerView]:
        """End every timer of one worker (torch's ``clear_timers``)."""
        return self._book.clear_worker(pid, reason)

    def worker_exited(self, identity: ProcessIdentity) -> None:
        """The worker is gone before its deadlines: end its timers, signal nothing."""
        self._book.worker_exited(identity)

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

    def emit_refused(
        self, pid: Any, scope_id: Any, expiration_time: Any, signal: Any, source: str, reason: str
    ) -> None:
        """Log and emit a ``refused`` event for a request that was not carried out;
        also for refusals decided outside the engine (e.g. who may read a stack)."""
        self._events.refused(pid, scope_id, expiration_time, signal, source, reason)

    # ---- reads ---------------------------------------------------------------------------

    def active(self) -> list[TimerView]:
        return self._book.views()

    def expired_by_worker(self, cutoff_unix: float) -> dict[int, list[TimerView]]:
        """Active timers with ``expiration_time`` ≤ ``cutoff_unix``, by pid: torch's
        ``get_expired_timers``. O(n): for compatibility, not for the reaping path."""
        expired: dict[int, list[TimerView]] = {}
        for timer in self.active():
            if timer.expiration_time <= cutoff_unix:
                expired.setdefault(timer.pid, []).append(timer)
        return expired

    def live_timers(self) -> list[LiveTimer]:
        """The armed timers, for readers to scan outside the lock (``snapshot``)."""
        return self._book.copy()

    def soonest(
        self, limit: int, *, pid: int | None = None, scope_contains: str | None = None
    ) -> tuple[list[TimerView], int]:
        """The ``limit`` active timers nearest their deadlines, optionally of one worker
        or with ``scope_contains`` in their scope, and how many match in all. Scanned
        outside the lock; many readers should share ``self.reader`` instead."""
        return snapshot.soonest(self.live_timers(), limit, pid=pid, scope_contains=scope_contains)

    def active_count(self) -> int:
        return len(self._book)

    def heap_size(self) -> int:
        return self._book.heap_size()

    # ---- reaping -------------------------------------------------------------------------

    def step(self) -> float | None:
        """Reap everything due now. Returns the next due time (monotonic), or None."""
        due, next_due = self._book.pop_due(self.clock.monotonic())
        self.expiry.handle(due)
        return next_due

    def start(self) -> None:
        if self._loop.started:
            return
        self.kill_watch.origin = self.clock.monotonic()  # restored deadlines are due now
        self.bus.start()
        self._book.workers.start()
        self._loop.start()

    def restart_loop(self) -> bool:
        """Start a new reaper loop thread if the old one died (the supervisor's remedy).
        Timers live in the engine, not the thread, so nothing is lost. False if it runs."""
        return self._loop.restart()

    def stop(self) -> None:
        self._loop.stop()
        # Expiries still capturing finish (within their budget) and emit before the drain.
        self.expiry.shutdown()
        self._book.workers.stop()
        self.bus.drain()
        self.bus.stop()

    def is_running(self) -> bool:
        return self._loop.is_running()

    @property
    def last_loop_monotonic(self) -> float:
        """When the loop last stepped: a stalled reaper shows here."""
        return self._loop.last_loop_monotonic

    @property
    def last_lag_seconds(self) -> float:
        """How late the loop woke for its last due entry."""
        return self._loop.last_lag_seconds

    def _wake_loop(self) -> None:
        self._loop.wake()
