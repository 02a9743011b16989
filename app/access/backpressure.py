"""Backpressure: while the recorder is behind, the service stops taking work in
instead of dropping what it already knows.

"Behind" counts every event numbered by the engine and not yet past the commit
watermark: those waiting in the event bus as well as in the recorder's buffer. At
``limit`` events (``TIMER_SERVICE_RECORDER_BUFFER``) the service pauses:

- The FIFO readers stop reading (``may_read``). Requests wait in the kernel's pipe
  (1 MiB), then in the writers: torch's FileTimerClient waits for room, up to 2 s
  with ours. A burst is applied at the pace the database takes it, and none is lost.
- New HTTP acquisitions and heartbeats get 503 before they touch the engine
  (``refusal``): nothing armed that is not written, and the client knows.

Releases and the reaper's own events (expiries, kills) are always taken: each ends a
timer that is already armed, so they are bounded by the timers the engine holds.

It resumes once the backlog is down to three quarters of the limit, so the readers
take work in large runs instead of flapping on every event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app import log_names
from app.db.recorder import Recorder

__all__ = ["Backpressure"]

logger = logging.getLogger(log_names.BACKPRESSURE)

_REPORT_SECONDS = 10.0


class Backpressure:
    def __init__(self, recorder: Recorder, limit: int) -> None:
        self._recorder = recorder
        self.limit = max(1, limit)
        self._resume_at = self.limit * 3 // 4
        self._issued: Callable[[], int] = lambda: 0
        self._lock = threading.Lock()
        self._paused_since: float | None = None
        self._reported_at = -_REPORT_SECONDS
        self.pauses = 0
        self.paused_seconds = 0.0

    def follow(self, issued: Callable[[], int]) -> None:
        """Count events from the newest number handed out (the bus's ``last_seq``)."""
        self._issued = issued

    def outstanding(self) -> int:
        """Events numbered but not yet written (nor set aside)."""
        return max(0, self._issued() - self._recorder.committed_seq)

    def paused(self) -> bool:
        """Whether work coming in must wait; updates the state (any thread)."""
        outstanding = self.outstanding()
        now = time.monotonic()
        with self._lock:
            if self._paused_since is None:
                if outstanding < self.limit:
                    return False
                self._paused_since = now
                self.pauses += 1
                report = now - self._reported_at >= _REPORT_SECONDS
                if report:
                    self._reported_at = now
            elif outstanding > self._resume_at:
                return True
            else:
                self.paused_seconds += now - self._paused_since
                self._paused_since = None
                return False
        if report:
            # A burst pauses and resumes many times a second: one line per episode.
            logger.warning(
                "the recorder is %d events behind (%s): not reading the FIFOs, answering "
                "new acquisitions 503, until it catches up (%d pauses, %.1fs paused so far)",
                outstanding,
                self._recorder.degraded_reason or "the database is slower than the load",
                self.pauses,
                self.paused_seconds,
            )
        return True

    def may_read(self) -> bool:
        """The FIFO readers' predicate."""
        return not self.paused()

    def refusal(self) -> str | None:
        """Why an HTTP acquisition must be turned away now, or None."""
        if not self.paused():
            return None
        reason = self._recorder.degraded_reason or "catching up with a burst"
        return (
            f"the recorder is {self.outstanding()} events behind ({reason}); nothing was "
            "armed or changed: retry shortly"
        )
