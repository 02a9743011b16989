"""The engine: live timers on a deadline heap, and one thread that reaps them.

Requests (acquire, extend, release) cost O(log n) and wake the reaper only
when they change the earliest deadline. The reaper sleeps until that deadline,
so kill latency does not depend on how often requests are polled. Each public
step (``step``, ``worker_exited``) is callable directly, so tests drive the
engine with a ``ManualClock`` and no sleeps.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import signal as signal_module
import threading
from collections.abc import Callable
from typing import Any

from . import snapshot
from .capturer import CapturedStack, Capturer
from .clock import Clock, SystemClock
from .events import EventBus, EventKind, Listener
from .expiry import DEFAULT_OVERDUE_MARGIN, ExpiryHandler, signal_name
from .kill_watch import KillWatch
from .process import ProcessIdentity, ProcessSignaller, identify
from .timers import (
    Escalation,
    LiveTimer,
    RefusedError,
    TimerView,
    check_expiration,
    check_signal,
    observe_only,
    refused_event,
    timer_event,
)
from .workers import WorkerRegistry

__all__ = ["Reaper", "RefusedError", "TimerView"]

# Named as before the move into engine/: operators filter on logger names.
logger = logging.getLogger("timer_core.reaper")

# The loop wakes at least this often even when idle, so that a stalled reaper
# is visible (``last_loop_monotonic``) at a cost of one wake-up a second.
_IDLE_TICK_SECONDS = 1.0
# Heap entries left behind by heartbeats are purged once they outnumber live ones.
_COMPACT_SLACK = 4096


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
        # Due kills not acted on within the budget plus the margin (health, metrics).
        self.kill_watch = KillWatch(
            self.clock,
            budget=capturer.budget if capturer is not None else 0.0,
            margin=overdue_margin,
            heap=lambda: self._heap,
            live=lambda: self._by_id,
        )
        self.expiry = ExpiryHandler(
            clock=self.clock,
            signaller=self.signaller,
            emit=self._emit,
            schedule=self._schedule,
            identify_process=identify_process,
            escalate_after=escalate_after,
            signal_children=signal_children,
            capturer=capturer,
            watch=self.kill_watch,
        )
        self._identify = identify_process
        self._ids = itertools.count(first_timer_id)
        self._heap_seq = itertools.count()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, LiveTimer | Escalation, int]] = []
        self._by_key: dict[tuple[int, str], LiveTimer] = {}
        self._by_id: dict[int, LiveTimer] = {}
        self._workers = WorkerRegistry(self.worker_exited if watch_exits else None)
        # Reads for many readers (the dashboard): scanned outside the lock, within a budget.
        self.reader = snapshot.TimerReader(self.live_timers)
        # Active timers per worker uid: one user must not exhaust the service's memory
        # and descriptors (each distinct worker pid holds a pidfd). Root and the
        # server's own uid are not capped.
        self._max_per_uid = max_timers_per_uid
        self._uncapped_uids = frozenset({0, os.geteuid()})
        self._per_uid: collections.Counter[int | None] = collections.Counter()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_requested = False
        self.last_loop_monotonic = self.clock.monotonic()
        self.last_lag_seconds = 0.0

    # ---- listeners -----------------------------------------------------------------------

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
            refusal = self.signaller.refusal(pid)
            observe_self = (
                observe_protected and pid in self.signaller.protected and observe_only(signal)
            )
            if refusal is not None and not observe_self:
                raise RefusedError(refusal)
            if not isinstance(scope_id, str):
                raise RefusedError(f"scope_id must be a string, got {scope_id!r}", "scope_id")
            expiration_time = check_expiration(expiration_time)
            signal = check_signal(signal)
            if dump_signal is not None and check_signal(dump_signal, "dump_signal") <= 0:
                raise RefusedError("dump_signal must be a signal number > 0", "dump_signal")
            with self._lock:
                known = self._workers.identity(pid)
            identity = known or self._identify(pid)
            if identity is None:
                raise RefusedError(f"no process with pid {pid} is running on this host")
            if owner_uid is not None and identity.uid != owner_uid:
                raise RefusedError(
                    f"{requester or f'uid {owner_uid}'} may only arm timers for its own "
                    f"processes; pid {pid} belongs to uid {identity.uid}",
                    "pid",
                    kind="forbidden",
                )
            return self._arm(
                identity, scope_id, expiration_time, signal, source, None, None, dump_signal
            )
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
            self._emit(
                EventKind.WORKER_GONE,
                stale,
                "expired" if expired else "released",
                reason="worker exited while the service was down",
            )
            return None
        # Its acquisition was recorded before the restart: announce nothing new.
        view, _ = self._arm(
            identity, scope_id, expiration_time, signal, source, timer_id, acquired_at, dump_signal
        )
        return view

    def _arm(
        self,
        identity: ProcessIdentity,
        scope_id: str,
        expiration_time: float,
        signal: int,
        source: str,
        timer_id: int | None,
        acquired_at: float | None,
        dump_signal: int | None = None,
    ) -> tuple[TimerView, bool]:
        now_wall = self.clock.time()
        # The same moment on the clock that never steps: what the heap and the kill use.
        deadline_monotonic = self.clock.monotonic() + (expiration_time - now_wall)
        pid = identity.pid
        new_worker = False
        with self._lock:
            timer = self._by_key.get((pid, scope_id))
            created = timer is None
            if timer is None:
                if acquired_at is None:  # a new request; restored timers are never dropped
                    self._check_uid_cap(identity.uid)
                self._per_uid[identity.uid] += 1
                timer = LiveTimer(
                    timer_id if timer_id is not None else next(self._ids),
                    identity,
                    scope_id,
                    signal,
                    source,
                    acquired_at if acquired_at is not None else now_wall,
                    expiration_time,
                    deadline_monotonic,
                    dump_signal,
                )
                self._by_key[(pid, scope_id)] = timer
                self._by_id[timer.id] = timer
                new_worker = self._workers.add(identity, scope_id)
            else:
                timer.generation += 1
                timer.deadline_monotonic = deadline_monotonic
                timer.expiration_time = expiration_time
                timer.signal = signal
                timer.dump_signal = dump_signal
            self._push(deadline_monotonic, timer, timer.generation)
            view = timer.view()
            if acquired_at is None:  # None for every request; restore passes the original
                self._emit(EventKind.ACQUIRED if created else EventKind.EXTENDED, timer, "active")
        if new_worker:
            self._workers.watch(identity)
        return view, created

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
        with self._lock:
            timer = self._by_key.get((pid, scope_id))
            return self._release_locked(timer, source, owner_uid, requester)

    def release_id(
        self,
        timer_id: int,
        *,
        source: str = "api",
        owner_uid: int | None = None,
        requester: str = "",
    ) -> TimerView | None:
        """As ``release``, by the timer's id."""
        with self._lock:
            timer = self._by_id.get(timer_id)
            return self._release_locked(timer, source, owner_uid, requester)

    def _release_locked(
        self, timer: LiveTimer | None, source: str, owner_uid: int | None, requester: str
    ) -> TimerView | None:
        if timer is None:
            return None
        if owner_uid is not None and timer.identity.uid != owner_uid:
            reason = (
                f"{requester or f'uid {owner_uid}'} may not release timer {timer.id}: "
                f"its worker belongs to uid {timer.identity.uid}"
            )
            self.emit_refused(timer.identity.pid, timer.scope_id, -1, timer.signal, source, reason)
            raise RefusedError(reason, kind="forbidden")
        return self._end_locked(timer, EventKind.RELEASED, "released", released_by=source)

    def clear_worker(self, pid: int, reason: str) -> list[TimerView]:
        """End every timer of one worker (torch's ``clear_timers``)."""
        with self._lock:
            timers = [self._by_key[(pid, scope)] for scope in self._workers.scopes(pid)]
            return [
                self._end_locked(timer, EventKind.RELEASED, "released", reason=reason)
                for timer in timers
            ]

    def worker_exited(self, identity: ProcessIdentity) -> None:
        """The worker is gone before its deadlines: end its timers, signal nothing."""
        with self._lock:
            if not self._workers.is_current(identity):
                return
            for scope in self._workers.scopes(identity.pid):
                self._end_locked(
                    self._by_key[(identity.pid, scope)],
                    EventKind.WORKER_GONE,
                    "released",
                    reason="worker exited before its deadline",
                )
            self._workers.forget(identity.pid)

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

    # ---- queries -------------------------------------------------------------------------

    def active(self) -> list[TimerView]:
        with self._lock:
            return [timer.view() for timer in self._by_id.values()]

    def expired_by_worker(self, cutoff_unix: float) -> dict[int, list[TimerView]]:
        """Active timers with ``expiration_time`` ≤ ``cutoff_unix``, by pid: torch's
        ``get_expired_timers``. O(n): for compatibility, not for the reaping path."""
        expired: dict[int, list[TimerView]] = {}
        for timer in self.active():
            if timer.expiration_time <= cutoff_unix:
                expired.setdefault(timer.pid, []).append(timer)
        return expired

    def live_timers(self) -> list[LiveTimer]:
        """The armed timers, for readers to scan outside the lock (``timer_core.snapshot``):
        the lock is held for one C-level copy of references, no Python code per timer."""
        with self._lock:
            return list(self._by_id.values())

    def soonest(
        self, limit: int, *, pid: int | None = None, scope_contains: str | None = None
    ) -> tuple[list[TimerView], int]:
        """The ``limit`` active timers nearest their deadlines, optionally of one worker
        or with ``scope_contains`` in their scope, and how many match in all. Scanned
        outside the lock; many readers should share ``self.reader`` instead."""
        return snapshot.soonest(self.live_timers(), limit, pid=pid, scope_contains=scope_contains)

    def active_count(self) -> int:
        return len(self._by_id)

    def heap_size(self) -> int:
        return len(self._heap)

    # ---- the reaping step ----------------------------------------------------------------

    def step(self) -> float | None:
        """Reap everything due now. Returns the next due time (monotonic), or None."""
        now = self.clock.monotonic()
        due: list[LiveTimer | Escalation] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, item, generation = heapq.heappop(self._heap)
                if isinstance(item, LiveTimer):
                    if self._by_id.get(item.id) is not item or item.generation != generation:
                        continue  # released or moved since this entry was pushed
                    self._forget_locked(item)
                due.append(item)
            next_due = self._heap[0][0] if self._heap else None
        self.expiry.handle(due)
        return next_due

    # ---- thread --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self.kill_watch.origin = self.clock.monotonic()  # restored deadlines are due now
        self.bus.start()
        self._workers.start()
        self._thread = threading.Thread(target=self._run, name="timer-reaper", daemon=True)
        self._thread.start()

    def restart_loop(self) -> bool:
        """Start a new reaper loop thread if the old one died (the supervisor's remedy).
        Timers live in the engine, not the thread, so nothing is lost. False if it runs."""
        if self.is_running() or self._stopping:
            return False
        self.last_loop_monotonic = self.clock.monotonic()
        self._thread = threading.Thread(target=self._run, name="timer-reaper", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        # Expiries still capturing finish (within their budget) and emit before the drain.
        self.expiry.shutdown()
        self._workers.stop()
        self.bus.drain()
        self.bus.stop()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._wake_requested = False
            next_due = self.step()
            now = self.clock.monotonic()
            self.last_loop_monotonic = now
            with self._lock:
                if self._stopping:
                    return
                if self._wake_requested:
                    continue
                timeout = _IDLE_TICK_SECONDS
                if next_due is not None:
                    timeout = min(timeout, max(0.0, next_due - now))
                self._wakeup.wait(timeout)
            if next_due is not None:
                self.last_lag_seconds = max(0.0, self.clock.monotonic() - next_due)

    # ---- internals (caller holds the lock) -----------------------------------------------

    def _push(self, due: float, item: LiveTimer | Escalation, generation: int) -> None:
        entry = (due, next(self._heap_seq), item, generation)
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._by_id) + _COMPACT_SLACK:
            self._heap = [
                e
                for e in self._heap
                if not isinstance(e[2], LiveTimer)
                or (self._by_id.get(e[2].id) is e[2] and e[2].generation == e[3])
            ]
            heapq.heapify(self._heap)
        if self._heap[0] is entry:
            self._wake_requested = True
            self._wakeup.notify()

    def _check_uid_cap(self, uid: int | None) -> None:
        cap = self._max_per_uid
        if cap is None or uid is None or uid in self._uncapped_uids:
            return
        if self._per_uid[uid] >= cap:
            raise RefusedError(
                f"uid {uid} already holds {cap} active timers, the most one user may hold "
                "(--max-timers-per-user); release some first",
                kind="limit",
            )

    def _forget_locked(self, timer: LiveTimer) -> None:
        pid = timer.identity.pid
        del self._by_key[(pid, timer.scope_id)]
        del self._by_id[timer.id]
        self._workers.remove(pid, timer.scope_id)
        uid = timer.identity.uid
        self._per_uid[uid] -= 1
        if self._per_uid[uid] <= 0:
            del self._per_uid[uid]

    def _end_locked(self, timer: LiveTimer, kind: str, state: str, **detail: Any) -> TimerView:
        self._forget_locked(timer)
        self._emit(kind, timer, state, **detail)
        return timer.view(state)

    def _schedule(self, due: float, escalation: Escalation) -> None:
        with self._lock:
            self._push(due, escalation, 0)

    def _emit(
        self,
        kind: str,
        timer: LiveTimer,
        state: str,
        stack: CapturedStack | None = None,
        **detail: Any,
    ) -> None:
        now = self.clock.time
        self.bus.publish(lambda seq: timer_event(seq, now(), kind, timer, state, stack, detail))

    def emit_refused(
        self, pid: Any, scope_id: Any, expiration_time: Any, signal: Any, source: str, reason: str
    ) -> None:
        """Log and emit a ``refused`` event for a request that was not carried out;
        also for refusals decided outside the engine (e.g. who may read a stack)."""
        # The values are what the request carried, of any type: each is repr()'d (an
        # integer signal is named), so a newline in a scope cannot forge a log line.
        logger.warning(
            "refused a timer request from %s: pid=%r scope=%r signal=%s reason=%r",
            source,
            pid,
            scope_id,
            signal_name(signal)
            if isinstance(signal, int) and not isinstance(signal, bool)
            else repr(signal),
            reason,
        )
        request, now = (pid, scope_id, expiration_time, signal), self.clock.time
        self.bus.publish(lambda seq: refused_event(seq, now(), request, source, reason))
