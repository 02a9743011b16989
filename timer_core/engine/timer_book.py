"""The live timers and what is due when, under the engine's one lock: the Reaper's
state, and every method that only changes or reads it.

Each change is taken under the lock and announced as it happens (the event is numbered
under the lock too, so listeners see the changes in the order they were made). The
``Reaper`` holds one: it decides what may be armed (the checks, whose process it is),
arms it here, and acts on what this book hands it as due.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping

from . import snapshot
from .admission import RefusedError, check_scope_id
from .arm_request import LIBRARY, ArmRequest, Origin
from .clock import Clock
from .deadline_heap import DeadlineHeap, HeapEntry
from .emitter import EventEmitter
from .event_details import Armed, Ended
from .events import EventBus
from .process import ProcessIdentity
from .states import EventKind
from .timer_table import TimerTable
from .timers import Escalation, LiveTimer, Timer
from .user_share import UserShare
from .workers import WorkerRegistry

__all__ = ["TimerBook"]


class TimerBook:
    def __init__(
        self,
        *,
        clock: Clock,
        bus: EventBus,
        first_timer_id: int,
        watch_exits: bool,
        timer_ids: Callable[[], int] | None = None,
        max_timers_per_uid: int | None,
        node: str = "",
        earliest_moved: Callable[[], None] = lambda: None,
    ) -> None:
        """``earliest_moved`` is called under the lock when the earliest due time moved
        earlier: whoever sleeps until it must look again (the Reaper wakes its thread)."""
        self.clock = clock
        # The name every timer armed here carries (contract 8): the service's node.
        self.node = node
        self.bus = bus
        self.events = EventEmitter(bus, clock, node)
        self.lock = threading.Lock()
        self._earliest_moved = earliest_moved
        # Ids from 1 up, or from the caller's maker (the service's are fleet-unique).
        self._next_id = timer_ids or itertools.count(first_timer_id).__next__
        self._heap = DeadlineHeap()
        self.workers = WorkerRegistry(self.worker_exited if watch_exits else None)
        self._table = TimerTable(self.workers, max_per_uid=max_timers_per_uid)
        # Each user's rate of arms and heartbeats, and the history-full switch.
        self.user_share = UserShare(clock.monotonic)

    # ---- changes -------------------------------------------------------------------------

    def release(self, pid: int, scope_id: str, origin: Origin = LIBRARY) -> Timer | None:
        """End the active timer for (pid, scope_id); None if there is none. With the
        ``origin``'s ``owner_uid``, a timer whose worker belongs to another uid is not
        released: RefusedError (kind "forbidden"), after a ``refused`` event naming the
        requester. A scope id no acquisition could have armed (``request_text``) is
        refused alike (kind "invalid"): every source releases by the rule it arms by."""
        try:
            check_scope_id(scope_id)
        except RefusedError as error:
            self.refuse(ArmRequest(pid, scope_id, -1, 0), origin, error)
            raise
        with self.lock:
            timer = self._table.get(pid, scope_id)
            return self._release_locked(timer, origin)

    def release_id(self, timer_id: int, origin: Origin = LIBRARY) -> Timer | None:
        """As ``release``, by the timer's id."""
        with self.lock:
            timer = self._table.by_id.get(timer_id)
            return self._release_locked(timer, origin)

    def clear_worker(self, pid: int, reason: str) -> list[Timer]:
        """End every timer of one worker (torch's ``clear_timers``)."""
        with self.lock:
            return [
                self._end_locked(timer, EventKind.RELEASED, Ended(reason))
                for timer in self._table.of_worker(pid)
            ]

    def worker_exited(self, identity: ProcessIdentity) -> None:
        """The worker is gone before its deadlines: end its timers, signal nothing."""
        with self.lock:
            if not self.workers.is_current(identity):
                return
            for timer in self._table.of_worker(identity.pid):
                gone = Ended("worker exited before its deadline", before_deadline=True)
                self._end_locked(timer, EventKind.WORKER_GONE, gone)
            self.workers.forget(identity.pid)

    def emit_refused(self, request: ArmRequest, origin: Origin, reason: str) -> None:
        """Log and emit a ``refused`` event for a request that was not carried out;
        also for refusals decided outside the engine (e.g. who may read a stack). The
        request of a non-root ``origin.owner_uid`` is written within that user's rate
        (``UserShare.refusal_is_quiet``): each refusal is a row and a log line too."""
        if self.user_share.refusal_is_quiet(origin.owner_uid):
            return
        self.events.refused(request, origin, reason)

    # ---- reads ---------------------------------------------------------------------------

    def active(self) -> list[Timer]:
        with self.lock:
            return [timer.snapshot() for timer in self._table.by_id.values()]

    def expired_by_worker(self, cutoff_unix: float) -> dict[int, list[Timer]]:
        """Active timers with ``expiration_time`` ≤ ``cutoff_unix``, by pid: torch's
        ``get_expired_timers``. O(n): for compatibility, not for the reaping path."""
        expired: dict[int, list[Timer]] = {}
        for timer in self.active():
            if timer.expiration_time <= cutoff_unix:
                expired.setdefault(timer.pid, []).append(timer)
        return expired

    def live_timers(self) -> list[LiveTimer]:
        """The armed timers, for readers to scan outside the lock (``snapshot``): the
        lock is held for one C-level copy of references, no Python code per timer."""
        with self.lock:
            return list(self._table.by_id.values())

    def soonest(
        self, limit: int, *, pid: int | None = None, scope_contains: str | None = None
    ) -> tuple[list[Timer], int]:
        """The ``limit`` active timers nearest their deadlines, optionally of one worker
        or with ``scope_contains`` in their scope, and how many match in all. Scanned
        outside the lock; many readers should share the Reaper's ``reader`` instead."""
        return snapshot.soonest(self.live_timers(), limit, pid=pid, scope_contains=scope_contains)

    def job_members(self, job_id: str) -> list[LiveTimer]:
        """The armed timers of one job on this node (its ranks, and their scopes)."""
        with self.lock:
            return self._table.of_job(job_id)

    def active_count(self) -> int:
        return len(self._table)

    def heap_size(self) -> int:
        return len(self._heap)

    def heap_entries(self) -> list[HeapEntry]:
        """The heap's list itself (compaction replaces it, never edits it)."""
        return self._heap.entries

    def live_by_id(self) -> Mapping[int, LiveTimer]:
        return self._table.by_id

    def known_identity(self, pid: int) -> ProcessIdentity | None:
        """The identity of ``pid`` as a timer armed here knows it (with the labels read
        from its environment then), or None if no timer of it is armed."""
        with self.lock:
            return self.workers.identity(pid)

    # ---- for the Reaper: arming, and what falls due ---------------------------------------

    def refuse(self, request: ArmRequest, origin: Origin, error: RefusedError) -> None:
        """Announce the refusal ``error`` of ``request``, unless it is ``quiet``."""
        if error.quiet:
            return
        if error.kind == "limit":
            # It took its user's token already (``UserShare.check``): not a second one.
            self.events.refused(request, origin, error.reason)
        else:
            self.emit_refused(request, origin, error.reason)

    def arm(
        self,
        identity: ProcessIdentity,
        request: ArmRequest,
        expiration_time: float,
        signal: int,
        source: str,
        timer_id: int | None = None,
        acquired_at: float | None = None,
    ) -> tuple[Timer, bool]:
        """Create the timer for (pid, scope_id), or move it (a heartbeat); and whether it
        was created. ``expiration_time`` and ``signal`` are the request's, as checked. A
        request passes no ``acquired_at``: it is subject to the per-user cap and
        announced. A timer restored after a restart passes its recorded id and
        ``acquired_at``: never refused, and announced already."""
        scope_id, dump_signal, labels = request.scope_id, request.dump_signal, request.labels
        now_unix = self.clock.time()
        # The same moment on the clock that never steps: what the heap and the kill use.
        deadline_monotonic = self.clock.monotonic() + (expiration_time - now_unix)
        new_worker = False
        with self.lock:
            if acquired_at is None:
                # Arms and heartbeats alike become rows: each takes a token of its user's.
                self.user_share.check(identity.uid)
            timer = self._table.get(identity.pid, scope_id)
            created = timer is None
            if timer is None:
                if acquired_at is None:
                    self._table.check_cap(identity.uid)
                timer = LiveTimer(
                    timer_id if timer_id is not None else self._next_id(),
                    identity,
                    scope_id,
                    signal,
                    source,
                    acquired_at if acquired_at is not None else now_unix,
                    expiration_time,
                    deadline_monotonic,
                    dump_signal,
                    identity.labels if labels is None else identity.labels.merged(labels),
                    self.node,
                    request.timeout_source,
                )
                new_worker = self._table.add(timer)
            else:
                timer.generation += 1
                timer.deadline_monotonic = deadline_monotonic
                timer.expiration_time = expiration_time
                timer.signal = signal
                timer.dump_signal = dump_signal
            self._push(deadline_monotonic, timer, timer.generation)
            if acquired_at is None:
                kind = EventKind.ACQUIRED if created else EventKind.EXTENDED
                view = self.events.timer(kind, timer, Armed())
            else:
                view = timer.snapshot()
        if new_worker:
            self.workers.watch(identity)
        return view, created

    def take_due(self, now_monotonic: float) -> tuple[list[LiveTimer | Escalation], float | None]:
        """Take out everything due by ``now_monotonic`` (its timers end here, so no
        request can move them any more); and when the next entry is due, or None."""
        due: list[LiveTimer | Escalation] = []
        with self.lock:
            for item in self._heap.pop_due(now_monotonic, self._table.by_id):
                if isinstance(item, LiveTimer):
                    self._table.forget(item)
                due.append(item)
            return due, self._heap.next_due()

    def schedule(self, due_monotonic: float, escalation: Escalation) -> None:
        with self.lock:
            self._push(due_monotonic, escalation, 0)

    # ---- internals (caller holds the lock) -----------------------------------------------

    def _push(self, due_monotonic: float, item: LiveTimer | Escalation, generation: int) -> None:
        if self._heap.push(due_monotonic, item, generation, self._table.by_id):
            self._earliest_moved()

    def _release_locked(self, timer: LiveTimer | None, origin: Origin) -> Timer | None:
        if timer is None:
            return None
        owner_uid = origin.owner_uid
        if owner_uid is not None and timer.identity.uid != owner_uid:
            error = RefusedError(
                f"{origin.describe()} may not release timer {timer.id}: "
                f"its worker belongs to uid {timer.identity.uid}",
                kind="forbidden",
            )
            self.refuse(
                ArmRequest(timer.identity.pid, timer.scope_id, -1, timer.signal), origin, error
            )
            raise error
        return self._end_locked(timer, EventKind.RELEASED, Ended(released_by=origin.source))

    def _end_locked(self, timer: LiveTimer, kind: EventKind, detail: Ended) -> Timer:
        self._table.forget(timer)
        return self.events.timer(kind, timer, detail)
