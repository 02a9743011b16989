"""Workers that outlive their SIGKILL: what the kernel says they wait in, and when they
finally exit.

A SIGKILL cannot be caught, but it only takes effect when the process next returns
from the kernel. A worker in uninterruptible sleep (``D``: a driver, a hard NFS or a
FUSE mount whose server is gone, a GPU call) stays alive, holding its memory, its
GPU and its ports, until the kernel lets go, and no signal can hurry it. Nothing the
watchdog can do kills it; what it can do is say so, so an operator can act (fix the
mount, reset the device, drain the node).

So each worker sent a SIGKILL (``sigkilled``, on the kill path) is looked at again
``after`` seconds later, on this watch's own thread. If it is still the same live
process, it gets one ``unkillable`` event with its ``/proc`` state, its wait channel
and how long it has survived; its exit is then watched (``ExitWatcher``: a pidfd), and
gives one more ``unkillable`` event, with ``exited``.

Nothing here can delay a kill: ``sigkilled`` only queues, under a lock nothing slow
is done under. The look itself opens a pidfd (which never blocks) to tell a dead
worker from a live one, and reads the ``/proc`` files of live ones only, each on a
helper thread waited for at most ``read_within`` seconds: the kernel's files of a
process stuck in the kernel are not promised to answer.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import log_names
from .clock import Clock
from .emitter import Emit
from .event_details import Unkillable
from .exit_watcher import ExitWatcher
from .kernel_state import KernelState, read_kernel_state
from .process import ProcessIdentity, identify
from .states import EventKind
from .timers import LiveTimer

__all__ = ["UnkillableWatch"]

logger = logging.getLogger(log_names.UNKILLABLE)

# Stuck workers watched through pidfds at once; any more are checked once a second.
_MAX_PIDFDS = 64
# Looks whose /proc reads never returned, left behind, at most: past it, a due worker
# waits (``_RETRY_SECONDS`` at a time) rather than a thread more stuck with it.
MAX_HUNG_LOOKS = 64
_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Sigkilled:
    timer: LiveTimer
    at: float  # monotonic


def _gone(pid: int) -> bool:
    """Whether the process of ``pid`` is gone (or a zombie): asked through a pidfd, which
    never blocks and reads nothing of the process. Not sure: False."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. EMFILE: the bounded read decides
    try:
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)
    finally:
        os.close(fd)


class UnkillableWatch:
    def __init__(
        self,
        clock: Clock,
        after: float,
        emit: Emit,
        *,
        read_within: float = 1.0,
        identify_process: Callable[[int], ProcessIdentity | None] = identify,
        read_state: Callable[[int], KernelState] = read_kernel_state,
        max_hung_looks: int = MAX_HUNG_LOOKS,
    ) -> None:
        """``after``: seconds after its SIGKILL a worker still alive is unkillable."""
        if not (math.isfinite(after) and after > 0):
            raise ValueError(f"unkillable after must be a number of seconds > 0, not {after!r}")
        self.clock = clock
        self.after = after
        self.read_within = read_within
        self._emit = emit
        self._identify = identify_process
        self._read_state = read_state
        self._max_hung_looks = max_hung_looks
        self._hung: list[_Look] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._due: list[tuple[float, int, _Sigkilled]] = []
        self._order = itertools.count()
        # The workers sent SIGKILL and not yet found dead: each is looked at once.
        self._watched: set[ProcessIdentity] = set()
        # The ones found alive, until they exit.
        self._stuck: dict[ProcessIdentity, _Sigkilled] = {}
        self._exits = ExitWatcher(self._exited, max_pidfds=_MAX_PIDFDS)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ---- the kill path -------------------------------------------------------------------

    def sigkilled(self, timer: LiveTimer) -> None:
        """``timer``'s worker was just sent SIGKILL: look at it again ``after`` seconds
        from now. Never blocks: a push under a lock held only for pushes and pops."""
        now = self.clock.monotonic()
        with self._lock:
            if timer.identity in self._watched:
                return
            self._watched.add(timer.identity)
            heapq.heappush(self._due, (now + self.after, next(self._order), _Sigkilled(timer, now)))
            self._wakeup.notify()

    # ---- single steps (the thread's, and the tests') -------------------------------------

    def check_due(self) -> None:
        """Look at every worker whose ``after`` has passed: the dead are forgotten, each
        live one gets its ``unkillable`` event and its exit watched."""
        now = self.clock.monotonic()
        due: list[_Sigkilled] = []
        with self._lock:
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due)[2])
        alive = [killed for killed in due if not _gone(killed.timer.identity.pid)]
        self._hung = [look for look in self._hung if not look.done.is_set()]
        looks: dict[ProcessIdentity, _Look] = {}
        later: list[_Sigkilled] = []
        for killed in alive:
            if len(self._hung) + len(looks) >= self._max_hung_looks:
                later.append(killed)  # too many reads hang: no thread more for now
                continue
            identity = killed.timer.identity
            looks[identity] = _Look(identity, self._identify, self._read_state)
        # Real time: the bound is on the reads, whatever clock the engine runs on.
        give_up_at = time.monotonic() + self.read_within
        for look in looks.values():
            look.done.wait(max(0.0, give_up_at - time.monotonic()))
        self._hung += [look for look in looks.values() if not look.done.is_set()]
        stuck: list[tuple[_Sigkilled, _Look]] = []
        with self._lock:
            retry_at = self.clock.monotonic() + _RETRY_SECONDS
            for killed in later:
                heapq.heappush(self._due, (retry_at, next(self._order), killed))
            waiting = {killed.timer.identity for killed in later}
            for killed in due:
                identity = killed.timer.identity
                if identity in waiting:
                    continue
                found = looks.get(identity)
                if found is None or (found.done.is_set() and found.state is None):
                    self._watched.discard(identity)  # dead, or its pid is another's now
                else:
                    self._stuck[identity] = killed
                    stuck.append((killed, found))
        for killed, found in stuck:
            self._report(killed, found, now)

    def poll_exits(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for stuck workers to exit, and report those that
        did (one step of the exit watcher's thread)."""
        self._exits.poll_once(timeout)

    def stuck(self) -> int:
        """How many workers are alive past their SIGKILL now."""
        return len(self._stuck)

    # ---- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._exits.start()
        self._thread = threading.Thread(target=self._run, name="timer-unkillable", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._exits.stop()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                wait = self._due[0][0] - self.clock.monotonic() if self._due else None
                if wait is None or wait > 0:
                    self._wakeup.wait(wait)
                    continue
            try:
                self.check_due()
            except Exception:  # the watch lives on: a later worker gets its look
                logger.exception("looking at workers that outlived their SIGKILL failed")

    # ---- what is said --------------------------------------------------------------------

    def _report(self, killed: _Sigkilled, look: _Look, now: float) -> None:
        pid = killed.timer.identity.pid
        state = look.state if look.done.is_set() else None
        note = None
        if state is None:
            note = f"/proc/{pid} did not answer within {self.read_within:g}s"
            state = KernelState(None, None, None)
        detail = Unkillable(now - killed.at, state.letter, state.name, state.wchan, note=note)
        logger.warning(
            "timer %d: worker pid=%d %s; nothing can kill it until the kernel lets it go",
            killed.timer.id,
            pid,
            detail.reason + (f" ({note})" if note else ""),
        )
        self._emit(EventKind.UNKILLABLE, killed.timer, detail)
        self._exits.watch(killed.timer.identity)

    def _exited(self, identity: ProcessIdentity) -> None:
        """The exit watcher's call: a stuck worker exited at last."""
        with self._lock:
            killed = self._stuck.pop(identity, None)
            self._watched.discard(identity)
        if killed is None:
            return
        detail = Unkillable(self.clock.monotonic() - killed.at, exited=True)
        logger.warning("timer %d: worker pid=%d %s", killed.timer.id, identity.pid, detail.reason)
        self._emit(EventKind.UNKILLABLE, killed.timer, detail)


class _Look:
    """One live worker's identity and ``/proc`` state, read on a thread of its own: the
    caller waits for it within its bound, and leaves it behind past that."""

    def __init__(
        self,
        identity: ProcessIdentity,
        identify_process: Callable[[int], ProcessIdentity | None],
        read_state: Callable[[int], KernelState],
    ) -> None:
        self._identity = identity
        self._identify = identify_process
        self._read_state = read_state
        # None: gone, or its pid names another process now.
        self.state: KernelState | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, name="timer-unkillable-read", daemon=True).start()

    def _run(self) -> None:
        try:
            if self._identity.matches(self._identify(self._identity.pid)):
                self.state = self._read_state(self._identity.pid)
        except Exception:
            logger.exception("reading /proc of pid %d failed", self._identity.pid)
        finally:
            self.done.set()
