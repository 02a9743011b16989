"""What is due when: the reaper's heap of deadlines, on the monotonic clock.

An entry is ``(due_monotonic, seq, item, generation)``: a live timer's deadline, or an
escalation's. A heartbeat does not search the heap for the timer's old entry (O(n)): it
bumps the timer's generation and pushes a new entry, and the old one, stale, is skipped
when it surfaces. Stale entries are purged once they outnumber the live timers by far,
so a worker that heartbeats in a loop cannot grow the heap without bound.

Not thread-safe: the Reaper holds its lock around every call. The overdue watch
(``KillWatch``) reads ``entries`` without that lock, which is why compaction replaces
the list instead of editing it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping

from .timers import Escalation, LiveTimer

__all__ = ["DeadlineHeap", "HeapEntry", "is_current"]

HeapEntry = tuple[float, int, LiveTimer | Escalation, int]

# Stale entries tolerated beyond twice the live timers before a purge: a purge is O(n).
_COMPACT_SLACK = 4096


def is_current(entry: HeapEntry, live: Mapping[int, LiveTimer]) -> bool:
    """Whether ``entry`` still stands: an escalation's always does; a timer's while the
    timer is live (``live`` maps ids to live timers) and has not moved since."""
    _, _, item, generation = entry
    if not isinstance(item, LiveTimer):
        return True
    return live.get(item.id) is item and item.generation == generation


class DeadlineHeap:
    def __init__(self) -> None:
        self.entries: list[HeapEntry] = []
        self._seq = itertools.count()  # ties at one instant keep their push order

    def __len__(self) -> int:
        return len(self.entries)

    def push(
        self,
        due_monotonic: float,
        item: LiveTimer | Escalation,
        generation: int,
        live: Mapping[int, LiveTimer],
    ) -> bool:
        """Add an entry. True if it is now the earliest: whoever sleeps until the
        earliest must wake and look again."""
        entry = (due_monotonic, next(self._seq), item, generation)
        heapq.heappush(self.entries, entry)
        if len(self.entries) > 2 * len(live) + _COMPACT_SLACK:
            self.entries = [kept for kept in self.entries if is_current(kept, live)]
            heapq.heapify(self.entries)
        return self.entries[0] is entry

    def pop_due(
        self, now_monotonic: float, live: Mapping[int, LiveTimer]
    ) -> Iterator[LiveTimer | Escalation]:
        """Pop every entry due by ``now_monotonic`` and yield the items that still stand,
        earliest first. The caller may end each timer as it is yielded."""
        while self.entries and self.entries[0][0] <= now_monotonic:
            entry = heapq.heappop(self.entries)
            if is_current(entry, live):
                yield entry[2]

    def next_due(self) -> float | None:
        """When the earliest entry is due (monotonic), stale or not; None when empty."""
        return self.entries[0][0] if self.entries else None
