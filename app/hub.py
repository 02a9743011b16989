"""The hub (``serve --hub``, contract 9): the service without a reaper.

It serves the dashboard and every read for the fleet from the shared database, and
keeps no timers: no reaper, no FIFO, no node lock or beat (it is no node). A write to
timers meets ``NoTimersHere``, answered 409 with where to arm instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from app import log_names
from timer_core import Reaper
from timer_core.engine import LoopHealth, Timer
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.user_share import UserShare

__all__ = ["NO_TIMERS_HERE", "Hub", "NoTimersHere"]

logger = logging.getLogger(log_names.SERVICE)

NO_TIMERS_HERE = (
    "this is a hub (serve --hub): it arms no timers and signals nothing. "
    "Arm timers on the worker's own node, through the timer-service running there."
)


class NoTimersHere(Exception):
    """A write to timers reached a service that keeps none (a hub): a 409."""

    def __init__(self) -> None:
        super().__init__(NO_TIMERS_HERE)


class Hub:
    """Keeps no timers; see the module's docstring. Answers ``Service`` as a
    ``WorkerNode`` does (``app.timer_keeper.TimerKeeper``)."""

    local_node: str | None = None  # every timer it shows is read from the database
    user_fifos = None
    lock_problem: str | None = None
    reaper_restarts = 0

    def __init__(self) -> None:
        # Nobody arms here; the history quota still marks the share when the database
        # is full, which no request of this hub reads.
        self.user_share = UserShare(time.monotonic)

    def timers_here(self) -> Reaper:
        raise NoTimersHere

    def refused(self, request: ArmRequest, origin: Origin, reason: str) -> None:
        # No engine to record it as an event; the line is still logged (repr'd values:
        # a newline in a scope cannot forge a line).
        logger.warning(
            "refused a request from %s: pid=%r scope=%r reason=%r",
            origin.describe(),
            request.pid,
            request.scope_id,
            reason,
        )

    def live_timers(self) -> Sequence[Timer]:
        return ()

    def soonest(
        self, limit: int, *, pid: int | None, scope_contains: str | None
    ) -> tuple[Sequence[Timer], int]:
        return (), 0

    def active_count(self) -> int:
        return 0

    def last_seq(self) -> int:
        return 0  # no engine, no events: nothing a write could wait for

    def loop_health(self) -> LoopHealth:
        return LoopHealth()  # not running, by design: nothing wrong with that

    def kill_report(self) -> dict[str, Any]:
        return {}

    def captures_abandoned(self) -> int:
        return 0

    def fifo_report(self) -> dict[str, Any]:
        return {"fifo_malformed_lines": 0, "fifo_problems": (), "fifo_restorations": 0}

    def claim(self) -> None:
        pass  # the node lock is a node's: any number of hubs may read one database

    def release_claim(self) -> None:
        pass

    def start(self) -> None:
        pass

    def started_line(self, db_shown: str) -> str:
        return f"timer-service hub: no reaper, no FIFO; db {db_shown}"

    def stop(self) -> None:
        pass
