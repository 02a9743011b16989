"""Notices worker exits as they happen, without polling every pid.

Each watched worker is a pidfd in one epoll set: the kernel wakes the watcher
when the process exits. Pidfds stop at a budget (``descriptors.pidfd_budget``),
so workers never take the descriptors a kill needs; beyond it, or if pidfds run
out (EMFILE), the overflow pids are checked by a once-a-second sweep.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from .. import log_names
from .descriptors import descriptor_limit, pidfd_budget
from .poll_thread import PollThread
from .process import ProcessIdentity, identify

__all__ = ["ExitWatcher"]

logger = logging.getLogger(log_names.EXIT_WATCHER)

_SWEEP_SECONDS = 1.0


class ExitWatcher:
    def __init__(
        self, on_exit: Callable[[ProcessIdentity], None], *, max_pidfds: int | None = None
    ) -> None:
        self._on_exit = on_exit
        self._max_pidfds = max_pidfds or pidfd_budget(descriptor_limit())
        self._lock = threading.Lock()
        self._by_fd: dict[int, ProcessIdentity] = {}
        self._fd_by_pid: dict[int, int] = {}
        self._swept: dict[int, ProcessIdentity] = {}
        self._loop = PollThread("timer-exit-watcher")

    def watch(self, identity: ProcessIdentity) -> None:
        with self._lock:
            if identity.pid in self._fd_by_pid or identity.pid in self._swept:
                return
            if len(self._fd_by_pid) >= self._max_pidfds:
                if not self._swept:
                    logger.warning(
                        "%d workers watched through pidfds, the most that leaves descriptors "
                        "for kills; the exits of more are checked once a second",
                        self._max_pidfds,
                    )
                self._swept[identity.pid] = identity
                self._loop.wake()  # start the sweep if the loop is idle
                return
            try:
                fd = os.pidfd_open(identity.pid)
            except ProcessLookupError:
                fd = -1
            except OSError as error:
                logger.warning("pidfd_open(%d) failed (%s): sweeping it", identity.pid, error)
                self._swept[identity.pid] = identity
                self._loop.wake()  # start the sweep if the loop is idle
                return
            if fd >= 0:
                self._by_fd[fd] = identity
                self._fd_by_pid[identity.pid] = fd
                self._loop.register(fd)
                return
        # The worker is already gone: report it outside the lock.
        self._on_exit(identity)

    def unwatch(self, pid: int) -> None:
        with self._lock:
            self._swept.pop(pid, None)
            fd = self._fd_by_pid.pop(pid, None)
            if fd is not None:
                del self._by_fd[fd]
                self._loop.unregister(fd)
                os.close(fd)

    def start(self) -> None:
        self._loop.start(self._run)

    def stop(self) -> None:
        self._loop.stop()
        with self._lock:
            for fd in self._by_fd:
                os.close(fd)
            self._by_fd.clear()
            self._fd_by_pid.clear()
        self._loop.close()

    def poll_once(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (None: until something happens) for exits and
        report them (one step of the loop)."""
        ready = self._loop.poll(timeout)
        exited: list[ProcessIdentity] = []
        with self._lock:
            for fd in ready:
                identity = self._by_fd.pop(fd, None)
                if identity is None:
                    continue
                del self._fd_by_pid[identity.pid]
                self._loop.unregister(fd)
                os.close(fd)
                exited.append(identity)
            swept = list(self._swept.values())
        for identity in swept:
            if not identity.matches(identify(identity.pid)):
                with self._lock:
                    self._swept.pop(identity.pid, None)
                exited.append(identity)
        for identity in exited:
            try:
                self._on_exit(identity)
            except Exception:
                logger.exception("exit handler failed for pid %d", identity.pid)

    def _run(self) -> None:
        while not self._loop.stopping:
            self.poll_once(_SWEEP_SECONDS if self._swept else None)
