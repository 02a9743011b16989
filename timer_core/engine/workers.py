"""The workers the engine knows: each one's identity and the scopes it holds.

A worker's identity (pid plus start time) is read once, when it first asks, and
its exit is watched from then on. A worker whose timers have all ended stays
known while it lives, so one that acquires and releases in a loop costs no
/proc read or pidfd per request; its exit forgets it, and so does crowding.

Not thread-safe by itself: the Reaper calls it under its lock, except ``watch``,
``start`` and ``stop``, which must be called outside it.
"""

from __future__ import annotations

from collections.abc import Callable

from .exit_watcher import ExitWatcher
from .process import ProcessIdentity

__all__ = ["WorkerRegistry"]

# Idle workers kept known at most; the oldest idle one goes first.
MAX_IDLE_WORKERS = 4096


class WorkerRegistry:
    def __init__(self, on_exit: Callable[[ProcessIdentity], None] | None) -> None:
        self._scopes: dict[int, tuple[ProcessIdentity, set[str]]] = {}
        self._idle: dict[int, None] = {}  # insertion-ordered: oldest idle first
        self._watcher = ExitWatcher(on_exit) if on_exit is not None else None

    def identity(self, pid: int) -> ProcessIdentity | None:
        known = self._scopes.get(pid)
        return known[0] if known else None

    def scopes(self, pid: int) -> list[str]:
        known = self._scopes.get(pid)
        return sorted(known[1]) if known else []

    def is_current(self, identity: ProcessIdentity) -> bool:
        """Whether this is the process known under its pid (not an earlier one)."""
        known = self._scopes.get(identity.pid)
        return known is not None and known[0].matches(identity)

    def add(self, identity: ProcessIdentity, scope_id: str) -> bool:
        """Record that the worker holds ``scope_id``. True if the worker is new, in
        which case the caller must ``watch`` it once outside the lock."""
        known = self._scopes.get(identity.pid)
        self._idle.pop(identity.pid, None)
        if known is None:
            self._scopes[identity.pid] = (identity, {scope_id})
            return True
        known[1].add(scope_id)
        return False

    def remove(self, pid: int, scope_id: str) -> None:
        known = self._scopes.get(pid)
        if known is None:
            return
        known[1].discard(scope_id)
        if known[1]:
            return
        self._idle[pid] = None
        if len(self._idle) > MAX_IDLE_WORKERS:
            self.forget(next(iter(self._idle)))

    def forget(self, pid: int) -> None:
        self._scopes.pop(pid, None)
        self._idle.pop(pid, None)
        if self._watcher is not None:
            self._watcher.unwatch(pid)

    def watch(self, identity: ProcessIdentity) -> None:
        if self._watcher is not None:
            self._watcher.watch(identity)

    def start(self) -> None:
        if self._watcher is not None:
            self._watcher.start()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
