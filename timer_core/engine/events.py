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
from dataclasses import dataclass
from typing import Final

from .. import log_names
from .capturer import CapturedStack
from .event_details import (
    Ended,
    Escalated,
    EventDetail,
    Kill,
    NoKill,
    Refusal,
    Straggler,
    Unkillable,
    captured_stack,
)
from .states import EventKind
from .timers import RefusedRequest, Timer

__all__ = ["EventBus", "Listener", "TimerEvent"]

logger = logging.getLogger(log_names.EVENTS)


@dataclass(frozen=True, slots=True)
class TimerEvent:
    """One thing that happened to a timer (or to a refused request).

    ``timer`` is the timer as the event leaves it (its state after the event, so a
    listener needs no state machine of its own), or, for ``refused``, the request
    that armed nothing. ``detail`` says the rest, in the type of its kind.
    """

    seq: int
    kind: EventKind
    at: float
    timer: Timer | RefusedRequest
    detail: EventDetail

    @property
    def timer_id(self) -> int | None:
        return self.timer.id if isinstance(self.timer, Timer) else None

    @property
    def stack(self) -> CapturedStack | None:
        """The worker's stack, captured before the signal (expiry outcomes only)."""
        return captured_stack(self.detail)

    @property
    def sent_signal(self) -> bool:
        """A kill by this timer's own signal (not a timer whose worker another one of
        its timers had signalled already)."""
        return isinstance(self.detail, Kill) and self.detail.sent_signal

    def reason(self) -> str:
        """One line saying why the timer ended (or why the request was refused)."""
        detail = self.detail
        if isinstance(detail, Kill):
            if (why := detail.reason()) is not None:
                return why
            late_ms = 1000 * detail.late
            return f"signal {self.timer.signal} sent {late_ms:.1f} ms after the deadline"
        if (
            isinstance(detail, Ended | NoKill | Escalated | Refusal | Unkillable | Straggler)
            and detail.reason is not None
        ):
            return detail.reason
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
