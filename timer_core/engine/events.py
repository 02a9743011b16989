"""Timer events and the bus that hands them to listeners off the reaper thread.

Listeners (the recorder, metrics, the live feed) run on the bus's own thread,
so a slow or failing listener can never delay a kill.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .. import log_names
from .capturer import CapturedStack, RankStack

__all__ = [
    "END_KINDS",
    "EVENT_KINDS",
    "EventBus",
    "EventKind",
    "Listener",
    "TimerEvent",
]

logger = logging.getLogger(log_names.EVENTS)


class EventKind:
    ACQUIRED: Final = "acquired"
    EXTENDED: Final = "extended"
    RELEASED: Final = "released"
    EXPIRED: Final = "expired"
    KILLED: Final = "killed"
    KILL_FAILED: Final = "kill_failed"
    WORKER_GONE: Final = "worker_gone"
    REFUSED: Final = "refused"
    ESCALATED: Final = "escalated"
    # A job's timer expired: its ranks' stacks were captured before any signal to it.
    INCIDENT: Final = "incident"


# Every kind, in the order above: the one list the service validates filters against.
EVENT_KINDS: Final[tuple[str, ...]] = tuple(
    value for name, value in vars(EventKind).items() if name.isupper()
)

# The kinds that end a timer; each carries the timer's final state.
END_KINDS: Final = frozenset(
    {
        EventKind.RELEASED,
        EventKind.EXPIRED,
        EventKind.KILLED,
        EventKind.KILL_FAILED,
        EventKind.WORKER_GONE,
    }
)


@dataclass(frozen=True, slots=True)
class TimerEvent:
    """One thing that happened to a timer (or to a refused request).

    ``state`` is the timer's state after the event, so a listener needs no
    state machine of its own. ``timer_id`` is None for refused requests.
    """

    seq: int
    kind: str
    timer_id: int | None
    pid: int
    scope_id: str
    at: float
    state: str
    signal: int
    source: str
    acquired_at: float
    expiration_time: float
    process_create_time: float | None = None
    # The worker's real uid when the timer was armed (None if unknown).
    process_uid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # The signal on which the worker dumps its own stack, if it opted in.
    dump_signal: int | None = None
    # The worker's stack, captured before the signal (expiry events only).
    stack: CapturedStack | None = None
    # Where and which rank (contract 8), as on the timer.
    node: str = ""
    job_id: str | None = None
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    # ``incident`` events only: the stack of every live process of the job, taken at
    # once before the job's first signal.
    captures: tuple[RankStack, ...] = ()

    def reason(self) -> str:
        """One line saying why the timer ended (or why the request was refused)."""
        if "reason" in self.detail:
            return str(self.detail["reason"])
        if self.kind == EventKind.KILLED and "latency" in self.detail:
            late_ms = 1000 * float(self.detail["latency"])
            return f"signal {self.signal} sent {late_ms:.1f} ms after the deadline"
        return self.kind


Listener = Callable[[TimerEvent], None]

_STOP: Final = object()


class EventBus:
    """Numbers events and delivers them, in order, to every listener."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._queue: queue.SimpleQueue[TimerEvent | object] = queue.SimpleQueue()
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        """A number alone; prefer ``publish``, which numbers and queues in one step."""
        with self._lock:
            self._last_seq = next(self._seq)
            return self._last_seq

    def publish(self, build: Callable[[int], TimerEvent]) -> TimerEvent:
        """Number an event and queue it in one step, under one lock.

        Listeners then see events in the order of their numbers, from however many
        threads: one that has seen n has seen every m < n. The service's commit wait
        relies on it (a 201 waits for "every event up to mine is written"); taking a
        number and queueing in two steps let n+1 overtake n.
        """
        with self._lock:
            self._last_seq = next(self._seq)
            event = build(self._last_seq)
            self._queue.put(event)
        return event

    def last_seq(self) -> int:
        """The newest sequence number handed out (0 before the first)."""
        return self._last_seq

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    def emit(self, event: TimerEvent) -> None:
        """Queue an event numbered elsewhere (its order is the caller's business)."""
        self._queue.put(event)

    def drain(self) -> None:
        """Deliver everything queued now, on the caller's thread (tests, shutdown)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, TimerEvent):
                self._deliver(item)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="timer-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, TimerEvent):
                self._deliver(item)

    def _deliver(self, event: TimerEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                # A broken listener loses its own copy of the event, nothing more.
                logger.exception("timer event listener %r failed on %s", listener, event.kind)
