"""Process identities, read once per pid while the timers of a restart are re-armed.

Each restored timer is checked against the live process (pid, start time, uid). Read
from /proc for every row, 200,000 timers of four workers took 27 s before the service
answered its first request; remembered per pid for the length of the restore, they take
four reads. Outside a restore every call reads /proc afresh, as the engine expects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from timer_core import ProcessIdentity
from timer_core.engine import identify

__all__ = ["RestoreIdentities"]


class RestoreIdentities:
    """A drop-in for ``identify`` (the Reaper's ``identify_process``)."""

    def __init__(self, read: Callable[[int], ProcessIdentity | None] = identify) -> None:
        self._read = read
        self._known: dict[int, ProcessIdentity | None] | None = None

    def __call__(self, pid: int) -> ProcessIdentity | None:
        known = self._known
        if known is None:
            return self._read(pid)
        if pid not in known:
            known[pid] = self._read(pid)
        return known[pid]

    @contextlib.contextmanager
    def remembering(self) -> Iterator[None]:
        """Within this block, each pid is read once. A worker that exits meanwhile
        (the block lasts a second or so) is still safe: its exit is seen through its
        pidfd, and every signal checks the process's start time first."""
        self._known = {}
        try:
            yield
        finally:
            self._known = None
