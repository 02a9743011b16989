"""The service's health, measured once: ``Service.health()`` returns a ``Health``
that ``/healthz``, the metrics and the dashboard all read, so the three can never
disagree about whether the reaper is on time or the recorder keeps up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timer_core import Reaper
from timer_core.engine import LoopHealth

__all__ = [
    "ERROR_WINDOW_SECONDS",
    "Health",
    "RecorderHealth",
    "kill_path_report",
]

# An error on the expiry path keeps /healthz degraded for this long after it.
ERROR_WINDOW_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class RecorderHealth:
    backlog: int
    dropped: int
    write_errors: int
    last_error: str | None
    # Backpressure: events not yet committed, and how often intake paused.
    behind: int
    pauses: int
    # For the metrics only (not in /healthz's body).
    rejected: int
    commits: int
    pruned_events: int
    # Seconds since the oldest event still waiting to be written happened.
    backlog_age_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Health:
    pid: int
    uptime_seconds: float
    active_timers: int
    # On a hub (serve --hub) no reaper runs, by design: ``reaper`` says so, with no problem.
    hub: bool
    reaper: LoopHealth
    # Times the supervisor restarted a dead reaper thread.
    reaper_restarts: int
    recorder: RecorderHealth
    kills: dict[str, Any]
    lost_events_unacknowledged: int
    # Set when events were lost and not acknowledged (from the database: it stays
    # reported across restarts).
    losses_problem: str | None
    fifo: str | None
    fifo_malformed_lines: int
    captures_abandoned: int
    descriptors: dict[str, Any]
    # Descriptors near the limit, or connections shed to keep some for kills.
    descriptor_problems: list[str]
    # Why the database cannot be used now (DatabaseStatus), or None (contract 14).
    database_problem: str | None = None
    # FIFOs (--fifo, --fifo-dir) whose path was deleted or replaced and that cannot be
    # made again now, and why; and how many times one was made again.
    fifo_problems: tuple[str, ...] = ()
    fifo_restorations: int = 0
    # Another service took this node's lock after our database session was lost.
    lock_problem: str | None = None

    @property
    def problems(self) -> list[str]:
        """What fails the check: a reaper that is not reaping, overdue kills."""
        found = [self.reaper.problem] if self.reaper.problem else []
        if self.kills.get("problem"):
            found.append(self.kills["problem"])
        return found

    @property
    def degraded(self) -> list[str]:
        """What degrades it: trouble recording (the kills go on)."""
        found = [self.database_problem] if self.database_problem else []
        if self.recorder.last_error:
            found.append(self.recorder.last_error)
        if self.kills.get("recent_error"):
            found.append(f"an error on the expiry path: {self.kills['recent_error']}")
        if self.losses_problem:
            found.append(self.losses_problem)
        found.extend(self.fifo_problems)
        if self.lock_problem:
            found.append(self.lock_problem)
        return found + self.descriptor_problems

    @property
    def status(self) -> str:
        return "failing" if self.problems else ("degraded" if self.degraded else "ok")

    @property
    def http_status(self) -> int:
        # A reaper that is not reaping fails the check (a supervisor restarts us);
        # a recorder that cannot write is degraded but the kills go on.
        return 503 if self.problems else 200

    def to_json(self) -> dict[str, Any]:
        """The body of ``/healthz``."""
        recorder = self.recorder
        return {
            "status": self.status,
            "problems": self.problems + self.degraded,
            "pid": self.pid,
            "uptime_seconds": self.uptime_seconds,
            "active_timers": self.active_timers,
            "hub": self.hub,
            "reaper": {
                "running": self.reaper.running,
                "restarts": self.reaper_restarts,
                "seconds_since_loop": self.reaper.seconds_since_loop,
                "lag_seconds": self.reaper.lag_seconds,
            },
            "recorder": {
                "backlog": recorder.backlog,
                "dropped": recorder.dropped,
                "write_errors": recorder.write_errors,
                "last_error": recorder.last_error,
                "behind": recorder.behind,
                "pauses": recorder.pauses,
                "backlog_age_seconds": recorder.backlog_age_seconds,
            },
            "database": {"up": self.database_problem is None, "problem": self.database_problem},
            "kills": self.kills,
            "lost_events_unacknowledged": self.lost_events_unacknowledged,
            "fifo": self.fifo,
            "fifo_restorations": self.fifo_restorations,
            "descriptors": self.descriptors,
        }


def kill_path_report(reaper: Reaper) -> dict[str, Any]:
    """The kill path's health, for /healthz: ``problem`` (overdue kills: failing) and
    ``recent_error`` (degraded) are set only when there is one."""
    watch = reaper.kill_watch
    overdue = watch.check()
    captures = reaper.expiry.captures
    return {
        "overdue": overdue.count,
        "oldest_overdue_seconds": overdue.oldest_seconds,
        "overdue_after_seconds": overdue.allowance,
        "overdue_total": watch.overdue_total,
        "in_flight": watch.in_flight(),
        "expiry_errors": watch.errors_total,
        "recent_error": watch.recent_error(ERROR_WINDOW_SECONDS),
        "captures_hung": captures.hung() if captures is not None else 0,
        "problem": overdue.problem(),
    }
