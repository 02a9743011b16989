"""Is the kill path keeping its promise? Overdue kills and errors on the expiry path.

A due timer must be acted on (its worker signalled, or its outcome recorded) within
the stack budget after its deadline. ``KillWatch`` says when one was not, within the
budget plus a margin:

- due but still on the heap: the reaper has not popped it (stalled, or starved of its
  lock);
- popped and handed to the expiry path, but not settled yet (a capture or a signal
  that does not return, a kill thread that never ran).

It reads the engine's clock, so tests drive it with a ``ManualClock``, and it reads
the heap without the reaper's lock: a health check must answer while that lock is held
by whatever is stalling the reaper. A read that races a push or a pop can miss or
double-count an entry for one check, which a health check can afford.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .. import log_names
from .clock import Clock
from .deadline_heap import HeapEntry, is_current
from .timers import Escalation, LiveTimer

__all__ = ["KillWatch", "Overdue", "describe_error", "watch_key"]

logger = logging.getLogger(log_names.KILL_WATCH)

# ("timer", id) or ("escalation", id): one per due signal, the same on the heap and
# on the expiry path, so an overdue kill is counted once wherever it is stuck.
Key = tuple[str, int]

# A heap walk stops after this many overdue entries: the count is then "at least".
_WALK_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Overdue:
    """Due signals not acted on within the budget plus the margin, right now."""

    count: int
    # How far past its deadline the oldest one is (seconds; 0.0 when none).
    oldest_seconds: float
    allowance: float  # budget + margin

    def problem(self) -> str | None:
        if not self.count:
            return None
        return (
            f"{self.count} due kill{'s' if self.count != 1 else ''} not sent within "
            f"{self.allowance:g}s of the deadline (the stack budget plus a margin): the "
            f"oldest is {self.oldest_seconds:.1f}s past its deadline"
        )


def watch_key(item: LiveTimer | Escalation) -> Key:
    """The key of a due signal: a timer's, or the escalation of a timer's."""
    if isinstance(item, LiveTimer):
        return ("timer", item.id)
    return ("escalation", item.timer.id)


def describe_error(error: BaseException) -> str:
    """``OSError: [Errno 24] Too many open files (EMFILE)``: what a reason says."""
    text = f"{type(error).__name__}: {error}"
    number = getattr(error, "errno", None)
    if isinstance(number, int):
        name = errno.errorcode.get(number)
        if name:
            text += f" ({name})"
    return text


class KillWatch:
    def __init__(
        self,
        clock: Clock,
        *,
        budget: float,
        margin: float,
        heap: Callable[[], Sequence[HeapEntry]],
        live: Callable[[], Mapping[int, LiveTimer]],
    ) -> None:
        self.clock = clock
        self.budget = budget
        self.margin = margin
        self._heap = heap
        self._live = live
        self._lock = threading.Lock()
        self._in_flight: dict[Key, float] = {}
        self._counted: set[Key] = set()
        # Deadlines that passed before this moment (a restart re-arms them) are due
        # from here: the service was down, not late. ``Reaper.start`` moves it.
        self.origin = clock.monotonic()
        self.overdue_total = 0
        self.errors_total = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # monotonic
        self._was_overdue = False

    @property
    def allowance(self) -> float:
        return self.budget + self.margin

    # ---- the expiry path reports ---------------------------------------------------------

    def begin(self, key: Key, deadline_monotonic: float) -> None:
        with self._lock:
            self._in_flight[key] = deadline_monotonic

    def settle(self, key: Key) -> None:
        """``key`` was acted on: counted as overdue if it was late beyond the allowance
        and no check had counted it yet."""
        with self._lock:
            deadline_monotonic = self._in_flight.pop(key, None)
            if key in self._counted:
                self._counted.discard(key)
            elif deadline_monotonic is not None and self._late(deadline_monotonic) > self.allowance:
                self.overdue_total += 1

    def error(self, error: BaseException, where: str) -> str:
        """Count an error on the expiry path; returns the reason to record."""
        reason = f"{where}: {describe_error(error)}"
        with self._lock:
            self.errors_total += 1
            self.last_error = reason
            self.last_error_at = self.clock.monotonic()
        return reason

    def recent_error(self, within: float) -> str | None:
        """The last error on the expiry path, if it happened in the last ``within`` s."""
        at = self.last_error_at
        if at is None or self.clock.monotonic() - at > within:
            return None
        return self.last_error

    # ---- health --------------------------------------------------------------------------

    def check(self) -> Overdue:
        """What is overdue now; each overdue signal is counted in ``overdue_total``
        once. Logs when kills become overdue and when they no longer are."""
        cutoff = self.clock.monotonic() - self.allowance
        found = dict(self._heap_due(self._effective_cutoff(cutoff)))
        with self._lock:
            found.update(
                (key, deadline_monotonic)
                for key, deadline_monotonic in self._in_flight.items()
                if max(deadline_monotonic, self.origin) <= cutoff
            )
            new = found.keys() - self._counted
            self.overdue_total += len(new)
            # Keep only what is still overdue (or in flight, to be settled).
            self._counted = (self._counted | new) & (found.keys() | self._in_flight.keys())
        oldest = max((self._late(due) for due in found.values()), default=0.0)
        overdue = Overdue(len(found), oldest, self.allowance)
        if overdue.count and not self._was_overdue:
            logger.error("%s", overdue.problem())
        elif self._was_overdue and not overdue.count:
            logger.warning("no kill is overdue any more")
        self._was_overdue = bool(overdue.count)
        return overdue

    def in_flight(self) -> int:
        return len(self._in_flight)

    def _late(self, deadline_monotonic: float) -> float:
        return self.clock.monotonic() - max(deadline_monotonic, self.origin)

    def _effective_cutoff(self, cutoff: float) -> float:
        # Before ``origin`` nothing is overdue, however old its deadline.
        return cutoff if cutoff >= self.origin else float("-inf")

    def _heap_due(self, before: float) -> list[tuple[Key, float]]:
        """Live heap entries due at or before ``before``: a walk of the heap's top that
        goes no deeper than the first entry past ``before`` on each branch."""
        heap = self._heap()  # the list itself: compaction replaces it, never edits it
        live = self._live()
        found: list[tuple[Key, float]] = []
        branches = [0]
        while branches and len(found) < _WALK_LIMIT:
            index = branches.pop()
            try:
                entry = heap[index]
            except IndexError:  # past the end, or popped since
                continue
            due = entry[0]
            if due > before:
                continue
            if is_current(entry, live):
                found.append((watch_key(entry[2]), due))
            branches += (2 * index + 1, 2 * index + 2)
        return found
