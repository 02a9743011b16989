"""The engine: live timers on a deadline heap, and one thread that reaps them.

Requests (acquire, extend, release) cost O(log n) and wake the reaper only
when they change the earliest deadline. The reaper sleeps until that deadline,
so kill latency does not depend on how often requests are polled. Each public
step (``step``, ``worker_exited``) is callable directly, so tests drive the
engine with a ``ManualClock`` and no sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import signal as signal_module
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock, SystemClock
from .events import EventBus, EventKind, Listener, TimerEvent
from .exit_watcher import ExitWatcher
from .process import ProcessIdentity, ProcessSignaller, identify

__all__ = ["Reaper", "RefusedError", "TimerView"]

logger = logging.getLogger(__name__)

# The loop wakes at least this often even when idle, so that a stalled reaper
# is visible (``last_loop_monotonic``) at a cost of one wake-up a second.
_IDLE_TICK_SECONDS = 1.0
# Workers with no timer left that stay known (identity and exit watch) for their next one.
_MAX_IDLE_WORKERS = 4096
# Heap entries left behind by heartbeats are purged once they outnumber live ones.
_COMPACT_SLACK = 4096


class RefusedError(ValueError):
    """A request that must not be armed; ``reason`` says why and what to do, and
    ``field`` names the request field at fault."""

    def __init__(self, reason: str, field: str = "pid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


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


class _Timer:
    __slots__ = (
        "acquired_at",
        "deadline",
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
        deadline: float,
    ) -> None:
        self.id = timer_id
        self.identity = identity
        self.scope_id = scope_id
        self.signal = signal
        self.source = source
        self.acquired_at = acquired_at
        self.expiration_time = expiration_time
        self.deadline = deadline
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
        )


@dataclass(frozen=True, slots=True)
class _Escalation:
    timer: _Timer
    targets: tuple[ProcessIdentity, ...]


# Computed once: valid_signals() builds a set of enum members on every call.
_VALID_SIGNALS = frozenset(int(number) for number in signal_module.valid_signals())


_INT64 = 2**63


def _storable_int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    return default


def _storable_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e300 else 0.0
        return number if math.isfinite(number) else 0.0
    return 0.0


def _observe_only(signal: Any) -> bool:
    return isinstance(signal, int) and not isinstance(signal, bool) and signal <= 0


def _check_signal(signal: Any) -> int:
    if isinstance(signal, bool) or not isinstance(signal, int):
        raise RefusedError(f"signal must be an integer, got {signal!r}", "signal")
    if signal > 0 and signal not in _VALID_SIGNALS:
        raise RefusedError(
            f"signal {signal} is not a signal on this system; use 9 (SIGKILL)", "signal"
        )
    return signal


def _check_expiration(expiration_time: Any) -> float:
    if isinstance(expiration_time, bool) or not isinstance(expiration_time, int | float):
        raise RefusedError(
            f"expiration_time must be a number, got {expiration_time!r}", "expiration_time"
        )
    if not math.isfinite(expiration_time):
        raise RefusedError("expiration_time must be finite", "expiration_time")
    return float(expiration_time)


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
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.signaller = signaller or ProcessSignaller()
        self.bus = bus or EventBus()
        self.escalate_after = escalate_after
        self.signal_children = signal_children
        self._identify = identify_process
        self._ids = itertools.count(first_timer_id)
        self._heap_seq = itertools.count()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Timer | _Escalation, int]] = []
        self._by_key: dict[tuple[int, str], _Timer] = {}
        self._by_id: dict[int, _Timer] = {}
        self._workers: dict[int, tuple[ProcessIdentity, set[str]]] = {}
        self._idle_workers: dict[int, None] = {}  # insertion-ordered: oldest idle first
        self._watcher = ExitWatcher(self.worker_exited) if watch_exits else None
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
    ) -> tuple[TimerView, bool]:
        """Arm a timer, or move the deadline of the active one for (pid, scope_id).

        Returns the timer and whether it was created (False: a heartbeat).
        Raises RefusedError, after emitting a ``refused`` event, if it must not be armed.
        """
        try:
            refusal = self.signaller.refusal(pid)
            # The server's own process may watch itself, but never ask to be signalled.
            observe_self = pid in self.signaller.protected and _observe_only(signal)
            if refusal is not None and not observe_self:
                raise RefusedError(refusal)
            if not isinstance(scope_id, str):
                raise RefusedError(f"scope_id must be a string, got {scope_id!r}", "scope_id")
            expiration_time = _check_expiration(expiration_time)
            signal = _check_signal(signal)
            with self._lock:
                known = self._workers.get(pid)
            identity = known[0] if known else self._identify(pid)
            if identity is None:
                raise RefusedError(f"no process with pid {pid} is running on this host")
        except RefusedError as error:
            self._emit_refused(pid, scope_id, expiration_time, signal, source, error.reason)
            raise
        return self._arm(identity, scope_id, expiration_time, signal, source, None, None)

    def apply(
        self, pid: int, scope_id: str, expiration_time: float, signal: int, *, source: str
    ) -> bool:
        """Apply one request in torch's convention: a negative ``expiration_time``
        releases, anything else acquires. False if refused (already logged and
        emitted as a ``refused`` event)."""
        try:
            if isinstance(expiration_time, int | float) and expiration_time < 0:
                self.release(pid, scope_id, source=source)
            else:
                self.acquire(pid, scope_id, expiration_time, signal, source=source)
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
    ) -> TimerView | None:
        """Re-arm a timer recorded before a restart, with its original identity.

        If the recorded process is gone (or its pid reused), the timer ends with
        ``worker_gone`` instead. A deadline already past fires on the next step.
        Construct the reaper with ``first_timer_id`` above every restored id.
        """
        if not identity.matches(self._identify(identity.pid)):
            stale = _Timer(
                timer_id, identity, scope_id, signal, source, acquired_at, expiration_time, 0.0
            )
            deadline_passed = expiration_time <= self.clock.time()
            self._emit(
                EventKind.WORKER_GONE,
                stale,
                "expired" if deadline_passed else "released",
                reason="worker exited while the service was down",
            )
            return None
        # Its acquisition was recorded before the restart: announce nothing new.
        view, _ = self._arm(
            identity, scope_id, expiration_time, signal, source, timer_id, acquired_at
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
    ) -> tuple[TimerView, bool]:
        now_wall = self.clock.time()
        deadline = self.clock.monotonic() + (expiration_time - now_wall)
        pid = identity.pid
        new_worker = False
        with self._lock:
            timer = self._by_key.get((pid, scope_id))
            created = timer is None
            if timer is None:
                timer = _Timer(
                    timer_id if timer_id is not None else next(self._ids),
                    identity,
                    scope_id,
                    signal,
                    source,
                    acquired_at if acquired_at is not None else now_wall,
                    expiration_time,
                    deadline,
                )
                self._by_key[(pid, scope_id)] = timer
                self._by_id[timer.id] = timer
                worker = self._workers.get(pid)
                if worker is None:
                    worker = self._workers[pid] = (identity, set())
                    new_worker = True
                worker[1].add(scope_id)
                self._idle_workers.pop(pid, None)
            else:
                timer.generation += 1
                timer.deadline = deadline
                timer.expiration_time = expiration_time
                timer.signal = signal
            self._push(deadline, timer, timer.generation)
            view = timer.view()
            if acquired_at is None:  # None for every request; restore passes the original
                self._emit(EventKind.ACQUIRED if created else EventKind.EXTENDED, timer, "active")
        if new_worker and self._watcher is not None:
            self._watcher.watch(identity)
        return view, created

    def release(self, pid: int, scope_id: str, *, source: str = "api") -> TimerView | None:
        with self._lock:
            timer = self._by_key.get((pid, scope_id))
            if timer is None:
                return None
            return self._end_locked(timer, EventKind.RELEASED, "released", released_by=source)

    def release_id(self, timer_id: int, *, source: str = "api") -> TimerView | None:
        with self._lock:
            timer = self._by_id.get(timer_id)
            if timer is None:
                return None
            return self._end_locked(timer, EventKind.RELEASED, "released", released_by=source)

    def clear_worker(self, pid: int, reason: str) -> list[TimerView]:
        """End every timer of one worker (torch's ``clear_timers``)."""
        with self._lock:
            worker = self._workers.get(pid)
            if worker is None:
                return []
            timers = [self._by_key[(pid, scope)] for scope in list(worker[1])]
            return [
                self._end_locked(timer, EventKind.RELEASED, "released", reason=reason)
                for timer in timers
            ]

    def worker_exited(self, identity: ProcessIdentity) -> None:
        """The worker is gone before its deadlines: end its timers, signal nothing."""
        with self._lock:
            worker = self._workers.get(identity.pid)
            if worker is None or not worker[0].matches(identity):
                return
            for scope in list(worker[1]):
                self._end_locked(
                    self._by_key[(identity.pid, scope)],
                    EventKind.WORKER_GONE,
                    "released",
                    reason="worker exited before its deadline",
                )
            del self._workers[identity.pid]
            self._idle_workers.pop(identity.pid, None)

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

    def get(self, timer_id: int) -> TimerView | None:
        with self._lock:
            timer = self._by_id.get(timer_id)
            return timer.view() if timer else None

    def find(self, pid: int, scope_id: str) -> TimerView | None:
        with self._lock:
            timer = self._by_key.get((pid, scope_id))
            return timer.view() if timer else None

    def active(self) -> list[TimerView]:
        with self._lock:
            return [timer.view() for timer in self._by_id.values()]

    def expired_by_worker(self, deadline: float) -> dict[int, list[TimerView]]:
        """Active timers with ``expiration_time`` ≤ ``deadline`` (unix), by pid: torch's
        ``get_expired_timers``. O(n): for compatibility, not for the reaping path."""
        expired: dict[int, list[TimerView]] = {}
        for timer in self.active():
            if timer.expiration_time <= deadline:
                expired.setdefault(timer.pid, []).append(timer)
        return expired

    def active_count(self) -> int:
        return len(self._by_id)

    def heap_size(self) -> int:
        return len(self._heap)

    # ---- the reaping step ----------------------------------------------------------------

    def step(self) -> float | None:
        """Reap everything due now. Returns the next due time (monotonic), or None."""
        now = self.clock.monotonic()
        due: list[_Timer | _Escalation] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, item, generation = heapq.heappop(self._heap)
                if isinstance(item, _Timer):
                    if self._by_id.get(item.id) is not item or item.generation != generation:
                        continue  # released or moved since this entry was pushed
                    self._forget_locked(item)
                due.append(item)
            next_due = self._heap[0][0] if self._heap else None
        signalled: dict[int, int] = {}
        for item in due:
            try:
                if isinstance(item, _Timer):
                    self._expire(item, signalled)
                else:
                    self._escalate(item)
            except Exception:
                logger.exception("reaping failed for %r", item)
        return next_due

    def _expire(self, timer: _Timer, signalled: dict[int, int]) -> None:
        latency = self.clock.monotonic() - timer.deadline
        if timer.signal <= 0:
            self._emit(EventKind.EXPIRED, timer, "expired", reason="observe only", latency=latency)
            return
        pid = timer.identity.pid
        if pid in signalled:
            self._emit(
                EventKind.KILLED,
                timer,
                "killed",
                latency=latency,
                reason=f"worker already signalled for timer {signalled[pid]}",
            )
            return
        children = self.signaller.children(timer.identity) if self.signal_children else []
        outcome = self.signaller.send(timer.identity, timer.signal)
        latency = self.clock.monotonic() - timer.deadline
        if outcome.delivered:
            signalled[pid] = timer.id
            for child in children:
                self.signaller.send(child, timer.signal)
            self._emit(
                EventKind.KILLED,
                timer,
                "killed",
                latency=latency,
                children=[child.pid for child in children],
            )
            if timer.signal != signal_module.SIGKILL and self.escalate_after is not None:
                escalation = _Escalation(timer, (timer.identity, *children))
                with self._lock:
                    self._push(self.clock.monotonic() + self.escalate_after, escalation, 0)
        elif outcome.status == "gone":
            self._emit(EventKind.WORKER_GONE, timer, "expired", reason=outcome.reason)
        else:
            self._emit(EventKind.KILL_FAILED, timer, "expired", reason=outcome.reason)

    def _escalate(self, escalation: _Escalation) -> None:
        worker = escalation.targets[0]
        if not worker.matches(self._identify(worker.pid)):
            return  # the first signal did its job
        killed = [
            target.pid
            for target in escalation.targets
            if self.signaller.send(target, signal_module.SIGKILL).delivered
        ]
        self._emit(
            EventKind.ESCALATED,
            escalation.timer,
            "killed",
            reason=f"still alive {self.escalate_after}s after signal {escalation.timer.signal}",
            sigkilled=killed,
        )

    # ---- thread --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self.bus.start()
        if self._watcher is not None:
            self._watcher.start()
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
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
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

    def _push(self, due: float, item: _Timer | _Escalation, generation: int) -> None:
        entry = (due, next(self._heap_seq), item, generation)
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._by_id) + _COMPACT_SLACK:
            self._heap = [
                e
                for e in self._heap
                if not isinstance(e[2], _Timer)
                or (self._by_id.get(e[2].id) is e[2] and e[2].generation == e[3])
            ]
            heapq.heapify(self._heap)
        if self._heap[0] is entry:
            self._wake_requested = True
            self._wakeup.notify()

    def _forget_locked(self, timer: _Timer) -> None:
        pid = timer.identity.pid
        del self._by_key[(pid, timer.scope_id)]
        del self._by_id[timer.id]
        worker = self._workers.get(pid)
        if worker is None:
            return
        worker[1].discard(timer.scope_id)
        if worker[1]:
            return
        # Keep an idle worker known (identity read, exit watched) for its next
        # request: a worker that acquires and releases in a loop then costs no
        # /proc read or pidfd per request. Its exit removes it; so does crowding.
        self._idle_workers[pid] = None
        if len(self._idle_workers) > _MAX_IDLE_WORKERS:
            oldest = next(iter(self._idle_workers))
            del self._idle_workers[oldest]
            del self._workers[oldest]
            if self._watcher is not None:
                self._watcher.unwatch(oldest)

    def _end_locked(self, timer: _Timer, kind: str, state: str, **detail: Any) -> TimerView:
        self._forget_locked(timer)
        self._emit(kind, timer, state, **detail)
        return timer.view(state)

    def _emit(self, kind: str, timer: _Timer, state: str, **detail: Any) -> None:
        self.bus.emit(
            TimerEvent(
                seq=self.bus.next_seq(),
                kind=kind,
                timer_id=timer.id,
                pid=timer.identity.pid,
                scope_id=timer.scope_id,
                at=self.clock.time(),
                state=state,
                signal=timer.signal,
                source=timer.source,
                acquired_at=timer.acquired_at,
                expiration_time=timer.expiration_time,
                process_create_time=timer.identity.create_time,
                detail=detail,
            )
        )

    def _emit_refused(
        self, pid: Any, scope_id: Any, expiration_time: Any, signal: Any, source: str, reason: str
    ) -> None:
        logger.warning("refused timer request pid=%r scope=%r: %s", pid, scope_id, reason)
        now = self.clock.time()
        self.bus.emit(
            TimerEvent(
                seq=self.bus.next_seq(),
                kind=EventKind.REFUSED,
                timer_id=None,
                # What was asked is kept as text; the typed fields hold only values a
                # listener can store (a 200-digit pid must not break the recorder).
                pid=_storable_int(pid, -1),
                scope_id=str(scope_id)[:1024],
                at=now,
                state="refused",
                signal=_storable_int(signal, 0),
                source=source,
                acquired_at=now,
                expiration_time=_storable_float(expiration_time),
                detail={"reason": reason, "requested_pid": repr(pid)[:64]},
            )
        )
