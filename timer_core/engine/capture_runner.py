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
- Each user (the worker's real uid) gets a share of each: at most half the slots, a
  quarter of the hung captures and half of those under way. A user whose workers make
  every capture hang (py-spy blocked on a FIFO the worker mapped, a worker stuck in a
  FUSE read) then fills only its own share, and another user's kill still finds a free
  slot and keeps its evidence. Half the slots, not fewer: the common burst is one job
  of one user, every rank captured at once, and it still gets that many in parallel.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from .capturer import CapturedStack, Capturer
from .kill_watch import describe_error
from .process import ProcessIdentity

__all__ = ["CaptureRunner", "PendingCapture"]

# The capture checks its give-up time itself; this covers its last steps (building
# the /proc report, truncating) before the kill stops waiting.
_GRACE = 0.1


class PendingCapture:
    """One capture in progress. Only ``CaptureRunner`` touches its fields."""

    __slots__ = ("abandoned", "done", "give_up_at", "holds_slot", "stack", "uid", "why")

    def __init__(self, give_up_at: float, uid: int | None = None) -> None:
        self.give_up_at = give_up_at  # time.monotonic()
        self.uid = uid  # whose share it counts against (None: an unknown owner)
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
        self.slots_per_user = max(1, slots // 2)
        self.max_hung_per_user = max(1, max_hung // 4)
        self.max_live_per_user = max(1, max_live // 2)
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._free_slots = slots
        self._held: Counter[int | None] = Counter()  # slots held, per uid
        self._hung = 0
        self._hung_by: Counter[int | None] = Counter()
        self._live = 0  # started, not finished and not abandoned
        self._live_by: Counter[int | None] = Counter()
        self.abandoned_total = 0

    def hung(self) -> int:
        """Abandoned captures whose thread is still blocked."""
        return self._hung

    def start(
        self, identity: ProcessIdentity, dump_signal: int | None, give_up_at: float
    ) -> PendingCapture:
        """Start capturing ``identity``'s stack, to be given up at ``give_up_at``
        (``time.monotonic()``). Never blocks and never raises."""
        uid = identity.uid
        pending = PendingCapture(give_up_at, uid)
        with self._lock:
            refusal = self._refusal(uid)
            if refusal:
                pending.finish(None, refusal)
                return pending
            self._live += 1
            self._live_by[uid] += 1
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
                self._end_live(uid)
            pending.finish(None, f"no thread for the capture: {error}")
        return pending

    def _refusal(self, uid: int | None) -> str:
        """Why no capture may start for ``uid`` now ("" if one may). Under the lock."""
        if self._hung >= self.max_hung:
            return f"{self._hung} earlier captures are still hung: none taken"
        if self._hung_by[uid] >= self.max_hung_per_user:
            return f"{self._hung_by[uid]} earlier captures of uid {uid} are still hung: none taken"
        if self._live >= self.max_live:
            return f"{self._live} captures already under way: none taken"
        if self._live_by[uid] >= self.max_live_per_user:
            return f"{self._live_by[uid]} captures of uid {uid} already under way: none taken"
        return ""

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
            self._end_live(pending.uid)
            self._hung += 1
            self._hung_by[pending.uid] += 1
            self.abandoned_total += 1
            self._give_slot_back(pending)
            self._slot_freed.notify_all()  # a capture still waiting for a slot: stop
        return None, "the capture did not finish within the budget: abandoned"

    def _end_live(self, uid: int | None) -> None:
        self._live -= 1
        self._live_by[uid] -= 1

    def _give_slot_back(self, pending: PendingCapture) -> None:
        if pending.holds_slot:
            pending.holds_slot = False
            self._free_slots += 1
            self._held[pending.uid] -= 1
            self._slot_freed.notify_all()

    def _may_take_slot(self, pending: PendingCapture) -> bool:
        return pending.abandoned or (
            self._free_slots > 0 and self._held[pending.uid] < self.slots_per_user
        )

    def _run(
        self, pending: PendingCapture, identity: ProcessIdentity, dump_signal: int | None
    ) -> None:
        with self._lock:
            self._slot_freed.wait_for(
                lambda: self._may_take_slot(pending),
                timeout=max(0.0, pending.give_up_at - time.monotonic()),
            )
            if pending.abandoned:  # the kill went ahead while this waited for a slot
                self._hung -= 1
                self._hung_by[pending.uid] -= 1
                return
            if not self._may_take_slot(pending):
                self._end_live(pending.uid)
                pending.finish(None, "no capture slot came free within the budget")
                return
            pending.holds_slot = True
            self._free_slots -= 1
            self._held[pending.uid] += 1
        stack: CapturedStack | None = None
        why = ""
        try:
            stack = self.capturer.capture(identity, dump_signal, give_up_at=pending.give_up_at)
        except Exception as error:  # a capture is evidence, never a reason not to kill
            why = f"the capture failed: {describe_error(error)}"
        with self._lock:
            self._give_slot_back(pending)
            if pending.abandoned:
                self._hung -= 1
                self._hung_by[pending.uid] -= 1
                return
            self._end_live(pending.uid)
            pending.finish(stack, why)
