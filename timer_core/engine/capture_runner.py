"""Stack captures on threads of their own, so that no capture can hold up a kill.

A capture reads files and runs programs that the worker's user, or a hung kernel,
controls: a /proc read of a process stuck in the kernel, a dump file on a FUSE mount,
py-spy attached to a process in state ``D``. Each is bounded where it can be, but a
blocked system call cannot be interrupted from Python. So the kill never runs on the
capture's thread: it waits for the capture only until the capture's give-up time, and
then goes ahead without it.

- At most ``slots`` captures run at once (each may start py-spy; a burst of expiries
  must not start hundreds). A capture still waiting for a slot at its give-up time
  is skipped.
- A capture that overran is abandoned: its thread runs on until its call returns, but
  it gives its slot back, so hung captures never starve the ones after them.
- At most ``max_hung`` abandoned captures are kept, and at most ``max_live`` captures
  are under way (running or waiting for a slot). Beyond either, no capture is started
  (a note says why): threads are not spent without bound on a hostile host, nor when
  thousands of workers expire at once.
"""

from __future__ import annotations

import threading
import time

from .capturer import CapturedStack, Capturer
from .kill_watch import describe_error
from .process import ProcessIdentity

__all__ = ["CaptureRunner", "PendingCapture"]

# The capture checks its give-up time itself; this covers its last steps (building
# the /proc report, truncating) before the kill stops waiting.
_GRACE = 0.1


class PendingCapture:
    """One capture in progress. Only ``CaptureRunner`` touches its fields."""

    __slots__ = ("abandoned", "done", "give_up_at", "holds_slot", "stack", "why")

    def __init__(self, give_up_at: float) -> None:
        self.give_up_at = give_up_at  # time.monotonic()
        self.done = threading.Event()
        self.stack: CapturedStack | None = None
        self.why = ""  # why there is no stack
        self.holds_slot = False
        self.abandoned = False

    def finish(self, stack: CapturedStack | None, why: str = "") -> None:
        self.stack, self.why = stack, why
        self.done.set()


class CaptureRunner:
    def __init__(
        self, capturer: Capturer, *, slots: int = 8, max_hung: int = 64, max_live: int = 64
    ) -> None:
        self.capturer = capturer
        self.max_hung = max_hung
        self.max_live = max_live
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._hung = 0
        self._live = 0  # started, not finished and not abandoned
        self.abandoned_total = 0

    def hung(self) -> int:
        """Abandoned captures whose thread is still blocked."""
        return self._hung

    def start(
        self, identity: ProcessIdentity, dump_signal: int | None, give_up_at: float
    ) -> PendingCapture:
        """Start capturing ``identity``'s stack, to be given up at ``give_up_at``
        (``time.monotonic()``). Never blocks and never raises."""
        pending = PendingCapture(give_up_at)
        with self._lock:
            if self._hung >= self.max_hung:
                pending.finish(None, f"{self._hung} earlier captures are still hung: none taken")
                return pending
            if self._live >= self.max_live:
                pending.finish(None, f"{self._live} captures already under way: none taken")
                return pending
            self._live += 1
        thread = threading.Thread(
            target=self._run,
            args=(pending, identity, dump_signal),
            name="timer-stack-capture",
            daemon=True,  # a capture blocked in the kernel must not block the exit
        )
        try:
            thread.start()
        except RuntimeError as error:  # "can't start new thread": out of memory or pids
            with self._lock:
                self._live -= 1
            pending.finish(None, f"no thread for the capture: {error}")
        return pending

    def wait(self, pending: PendingCapture) -> tuple[CapturedStack | None, str]:
        """The stack, or None and why not, by ``pending``'s give-up time (plus a little
        grace) at the latest. A capture still running then is abandoned."""
        # One deadline, not one grace per wait: a job's kill waits for many captures in
        # turn, and N hung ones must not hold it N graces past the budget.
        pending.done.wait(max(0.0, pending.give_up_at + _GRACE - time.monotonic()))
        with self._lock:
            if pending.done.is_set():
                return pending.stack, pending.why
            pending.abandoned = True
            self._live -= 1
            self._hung += 1
            self.abandoned_total += 1
            if pending.holds_slot:
                pending.holds_slot = False
                self._slots.release()
        return None, "the capture did not finish within the budget: abandoned"

    def _run(
        self, pending: PendingCapture, identity: ProcessIdentity, dump_signal: int | None
    ) -> None:
        got_slot = self._slots.acquire(timeout=max(0.0, pending.give_up_at - time.monotonic()))
        with self._lock:
            if pending.abandoned:  # the kill went ahead while this waited for a slot
                if got_slot:
                    self._slots.release()
                self._hung -= 1
                return
            if not got_slot:
                self._live -= 1
                pending.finish(None, "no capture slot came free within the budget")
                return
            pending.holds_slot = True
        stack: CapturedStack | None = None
        why = ""
        try:
            stack = self.capturer.capture(identity, dump_signal, give_up_at=pending.give_up_at)
        except Exception as error:  # a capture is evidence, never a reason not to kill
            why = f"the capture failed: {describe_error(error)}"
        with self._lock:
            if pending.holds_slot:
                pending.holds_slot = False
                self._slots.release()
            if pending.abandoned:
                self._hung -= 1
                return
            self._live -= 1
            pending.finish(stack, why)
