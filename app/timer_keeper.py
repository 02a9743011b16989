"""What a service keeps of timers, and what it feeds their events to: the two shapes
``app.service.Service`` is composed from.

A worker's node (``app.worker_node.WorkerNode``) keeps its own timers and a hub
(``app.hub.Hub``) none; both answer ``TimerKeeper``, so the service never asks which
it holds. Neither imports this module: they match it by shape, and mypy checks them
where the service builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Engine

from timer_core import Reaper, TimerEvent
from timer_core.engine import LoopHealth, Timer
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.user_share import UserShare
from timer_core.sources import UserFifos

__all__ = ["EventView", "TimerKeeper"]


class TimerKeeper(Protocol):
    """What a service keeps of timers: a worker's node keeps its own (``WorkerNode``),
    a hub none (``Hub``). The service asks this, never which of the two it holds."""

    @property
    def local_node(self) -> str | None:
        """The node whose timers the engine holds: None on a hub, which holds none."""

    @property
    def user_fifos(self) -> UserFifos | None: ...

    @property
    def user_share(self) -> UserShare: ...

    @property
    def lock_problem(self) -> str | None: ...

    @property
    def reaper_restarts(self) -> int: ...

    def timers_here(self) -> Reaper:
        """The engine that arms, moves and releases timers; raises ``NoTimersHere``
        (409) on a hub."""

    def refused(self, request: ArmRequest, origin: Origin, reason: str) -> None: ...

    def live_timers(self) -> Sequence[Timer]: ...

    def soonest(
        self, limit: int, *, pid: int | None, scope_contains: str | None
    ) -> tuple[Sequence[Timer], int]: ...

    def active_count(self) -> int: ...

    def last_seq(self) -> int: ...

    def loop_health(self) -> LoopHealth: ...

    def kill_report(self) -> dict[str, Any]: ...

    def captures_abandoned(self) -> int: ...

    def fifo_report(self) -> dict[str, Any]: ...

    def claim(self) -> None: ...

    def release_claim(self) -> None: ...

    def start(self) -> None: ...

    def started_line(self, db_shown: str) -> str: ...

    def stop(self) -> None: ...


class EventView(Protocol):
    """A view kept in memory from the engine's events (the dashboard's live feed):
    seeded from the database once it is migrated, then fed every event."""

    def seed(self, engine: Engine) -> None: ...

    def __call__(self, event: TimerEvent) -> None: ...
