"""The live timers and what is due when, under the engine's one lock.

Every change to the timers is one method here: taken under the lock, and announced as
it happens (the event is numbered under the lock too, so listeners see the changes in
the order they were made). The ``Reaper`` decides what may be asked (the checks, whose
process it is) and acts on what falls due; this book only keeps the timers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from .admission import RefusedError
from .clock import Clock
from .deadline_heap import DeadlineHeap, HeapEntry
from .emitter import EventEmitter
from .events import EventKind
from .process import ProcessIdentity
from .timer_table import TimerTable
from .timers import Escalation, LiveTimer, TimerView
from .workers import WorkerRegistry

__all__ = ["TimerBook"]


class TimerBook:
    def __init__(
        self,
        *,
        clock: Clock,
        events: EventEmitter,
        wake: Callable[[], None],
        first_timer_id: int,
        watch_exits: bool,
        max_per_uid: int | None,
    ) -> None:
        """``wake`` is called, under the lock, when the earliest due time moves earlier."""
        self.lock = threading.Lock()
        self._clock = clock
        self._events = events
        self._wake = wake
        self._ids = itertools.count(first_timer_id)
        self._heap = DeadlineHeap()
        self.workers = WorkerRegistry(self.worker_exited if watch_exits else None)
        self._table = TimerTable(self.workers, max_per_uid=max_per_uid)

    # ---- changes -------------------------------------------------------------------------

    def known_identity(self, pid: int) -> ProcessIdentity | None:
        """The identity read when this worker first asked, if it is still known."""
        with self.lock:
            return self.workers.identity(pid)

    def arm(
        self,
        identity: ProcessIdentity,
        scope_id: str,
        expiration_time: float,
        signal: int,
        source: str,
        dump_signal: int | None,
        timer_id: int | None = None,
        acquired_at: float | None = None,
    ) -> tuple[TimerView, bool]:
        """Create the timer for (pid, scope_id), or move it (a heartbeat); and whether it
        was created. A request passes no ``acquired_at``: it is subject to the per-user
        cap and announced. A timer restored after a restart passes its recorded id and
        ``acquired_at``: never refused, and announced already."""
        now_unix = self._clock.time()
        # The same moment on the clock that never steps: what the heap and the kill use.
        deadline_monotonic = self._clock.monotonic() + (expiration_time - now_unix)
        new_worker = False
        with self.lock:
            timer = self._table.get(identity.pid, scope_id)
            created = timer is None
            if timer is None:
                if acquired_at is None:
                    self._table.check_cap(identity.uid)
                timer = LiveTimer(
                    timer_id if timer_id is not None else next(self._ids),
                    identity,
                    scope_id,
                    signal,
                    source,
                    acquired_at if acquired_at is not None else now_unix,
                    expiration_time,
                    deadline_monotonic,
                    dump_signal,
                )
                new_worker = self._table.add(timer)
            else:
                timer.generation += 1
                timer.deadline_monotonic = deadline_monotonic
                timer.expiration_time = expiration_time
                timer.signal = signal
                timer.dump_signal = dump_signal
            self._push(deadline_monotonic, timer, timer.generation)
            view = timer.view()
            if acquired_at is None:
                kind = EventKind.ACQUIRED if created else EventKind.EXTENDED
                self._events.timer(kind, timer, "active")
        if new_worker:
            self.workers.watch(identity)
        return view, created

    def release(
        self,
        key: tuple[int, str] | int,
        source: str,
        owner_uid: int | None,
        requester: str,
    ) -> TimerView | None:
        """End the active timer ``key``, (pid, scope_id) or an id; None if there is none.
        With ``owner_uid``, one whose worker belongs to another uid is refused."""
        with self.lock:
            timer = self._table.by_id.get(key) if isinstance(key, int) else self._table.get(*key)
            if timer is None:
                return None
            if owner_uid is not None and timer.identity.uid != owner_uid:
                reason = (
                    f"{requester or f'uid {owner_uid}'} may not release timer {timer.id}: "
                    f"its worker belongs to uid {timer.identity.uid}"
                )
                pid, scope_id, signal = timer.identity.pid, timer.scope_id, timer.signal
                self._events.refused(pid, scope_id, -1, signal, source, reason)
                raise RefusedError(reason, kind="forbidden")
            return self._end_locked(timer, EventKind.RELEASED, "released", released_by=source)

    def clear_worker(self, pid: int, reason: str) -> list[TimerView]:
        """End every timer of one worker, as released."""
        with self.lock:
            return [
                self._end_locked(timer, EventKind.RELEASED, "released", reason=reason)
                for timer in self._table.of_worker(pid)
            ]

    def worker_exited(self, identity: ProcessIdentity) -> None:
        """The worker is gone before its deadlines: end its timers, and forget it."""
        with self.lock:
            if not self.workers.is_current(identity):
                return
            for timer in self._table.of_worker(identity.pid):
                self._end_locked(
                    timer,
                    EventKind.WORKER_GONE,
                    "released",
                    reason="worker exited before its deadline",
                )
            self.workers.forget(identity.pid)

    def pop_due(self, now_monotonic: float) -> tuple[list[LiveTimer | Escalation], float | None]:
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

    # ---- reads ---------------------------------------------------------------------------

    def views(self) -> list[TimerView]:
        with self.lock:
            return [timer.view() for timer in self._table.by_id.values()]

    def copy(self) -> list[LiveTimer]:
        """The live timers, for a scan outside the lock: the lock is held for one
        C-level copy of references, no Python code per timer."""
        with self.lock:
            return list(self._table.by_id.values())

    def __len__(self) -> int:
        return len(self._table)

    def heap_entries(self) -> list[HeapEntry]:
        """The heap's list as it is, read without the lock (``KillWatch``)."""
        return self._heap.entries

    def live(self) -> dict[int, LiveTimer]:
        """The live timers by id, read without the lock (``KillWatch``)."""
        return self._table.by_id

    def heap_size(self) -> int:
        return len(self._heap)

    # ---- internals (caller holds the lock) -----------------------------------------------

    def _push(self, due_monotonic: float, item: LiveTimer | Escalation, generation: int) -> None:
        if self._heap.push(due_monotonic, item, generation, self._table.by_id):
            self._wake()

    def _end_locked(self, timer: LiveTimer, kind: str, state: str, **detail: Any) -> TimerView:
        self._table.forget(timer)
        self._events.timer(kind, timer, state, **detail)
        return timer.view(state)
