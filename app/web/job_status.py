"""A job's status as its page states it, and which ranks its grid marks as suspects.

The status is read off the grid itself (the latest timer of each rank) and the job's
count of active timers, so an operator can check it against what the page shows:

- ``hung``: the latest timer of at least one rank ran out (``expired`` or ``killed``).
  A rank that hangs is killed or expires, and opens an incident; the job stays hung
  until that rank acquires a new timer (torchrun restarted it), even if the job then
  stops: it ended in a hang.
- ``running``: no rank's latest timer ran out, and the job has an active timer.
- ``finished``: no rank's latest timer ran out and none is active: every rank's last
  timer was released.

The grid marks the suspects of the job's newest incident while that incident is the
job's present: the job is hung, or a timer the incident captured is still some rank's
latest. Once every rank has moved on to new timers (a restart that runs), the old
suspects are history, listed with their incident below the grid, and not marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from timer_core.engine.states import TimerState

__all__ = ["RAN_OUT", "job_status", "ranks_text", "suspects_marked"]

# The ends of a timer that did not end by a release: its deadline passed.
RAN_OUT = frozenset({TimerState.EXPIRED.value, TimerState.KILLED.value})
# A sentence names this many ranks, then counts the rest.
_RANKS_NAMED = 8


def ranks_text(ranks: Sequence[int | None]) -> str:
    """``rank 2``, ``ranks 2, 3``, ``ranks 0, 1, … and 5 more``: rank numbers that read
    as ranks, never as a count."""
    if not ranks:
        return "none"
    named = [str(rank) if rank is not None else "?" for rank in ranks[:_RANKS_NAMED]]
    more = len(ranks) - len(named)
    listed = ", ".join(named) + (f" and {more} more" if more else "")
    return ("rank " if len(ranks) == 1 else "ranks ") + listed


def job_status(job: dict[str, Any]) -> dict[str, Any]:
    """``{"status", "text"}`` of a job as ``JobDetail.model_dump(mode="json")`` has it."""
    ran_out = [rank for rank in job["ranks"] if rank["state"] in RAN_OUT]
    if ran_out:
        states = sorted({rank["state"] for rank in ran_out})
        numbers = [rank["rank"] for rank in ran_out]
        whose = ranks_text(numbers)
        if len(ran_out) == 1:
            verb = "was killed" if states == ["killed"] else "expired"
            ended = f"the latest timer of {whose} {verb}; no new timer has replaced it"
        else:
            ended = (
                f"the latest timers of {whose} ran out ({', '.join(states)}); "
                "no new timers have replaced them"
            )
        return {"status": "hung", "text": ended}
    active = int(job["active_timers"])
    if active:
        timers = "timer" if active == 1 else "timers"
        return {"status": "running", "text": f"{active} active {timers}"}
    return {"status": "finished", "text": "no active timers: every rank released its last one"}


def suspects_marked(
    job: dict[str, Any], status: str, incidents: Sequence[dict[str, Any]]
) -> list[int | None]:
    """The ranks the grid marks: the suspects of the newest of ``incidents`` (newest
    first) while it is the job's present (see the module's doc), else none."""
    if not incidents:
        return []
    newest = incidents[0]
    shown = {rank["timer_id"] for rank in job["ranks"]}
    captured = {rank["timer_id"] for rank in newest["ranks"] if rank["timer_id"] is not None}
    if status == "hung" or shown & captured:
        return list(newest["suspects"])
    return []
