"""The nodes sharing one database (contract 9): each service registers its node, takes
a number for its timer ids, and beats; any service answers which nodes are up.

- **Numbers** come from the database, never from timing: a node takes the smallest
  number no other node holds, and the unique key on ``number`` makes two nodes that
  register at the same instant collide; the loser retries with the next number.
- **Heartbeat**: ``last_seen`` every few seconds, on a thread of its own (a slow
  database never touches the kill path). A node silent for ``--node-timeout`` is down.
- **A node's own ids**: its next timer id starts past the newest id it recorded, so a
  restart never repeats one (``FleetTimerIds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from app import log_names
from app.db.database_status import one_line
from app.db.models import Node, Timer
from app.db.timer_ids import MAX_NODES
from app.ops.periodic import Periodic
from timer_core.engine import TimerState

__all__ = ["NodeBeat", "NodeStatus", "node_statuses", "register_node"]

logger = logging.getLogger(log_names.NODES)

_nodes = Node.__table__  # type: ignore[attr-defined]
_timers = Timer.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    name: str
    status: str  # "up" or "down"
    last_seen: float
    version: str
    active_timers: int


def register_node(engine: Engine, name: str, version: str) -> tuple[int, int]:
    """Register (or re-register) node ``name``: its number, and the newest timer id it
    recorded (0 if none)."""
    now = time.time()
    for _ in range(MAX_NODES):
        try:
            with engine.begin() as connection:
                number = connection.execute(
                    select(_nodes.c.number).where(_nodes.c.name == name)
                ).scalar()
                if number is not None:
                    connection.execute(
                        update(_nodes)
                        .where(_nodes.c.name == name)
                        .values(started_at=now, last_seen=now, version=version)
                    )
                else:
                    number = _free_number(connection.execute(select(_nodes.c.number)).scalars())
                    connection.execute(
                        _nodes.insert().values(
                            name=name, number=number, started_at=now, last_seen=now, version=version
                        )
                    )
                highest = connection.execute(
                    select(func.max(_timers.c.id)).where(_timers.c.node == name)
                ).scalar()
            return int(number), int(highest or 0)
        except IntegrityError:
            continue  # another node took that number (or name) at the same instant
    raise RuntimeError(f"no node number left: {MAX_NODES} nodes are registered")


def _free_number(taken: Iterable[int]) -> int:
    used = set(taken)
    for number in range(MAX_NODES):
        if number not in used:
            return number
    raise RuntimeError(
        f"all {MAX_NODES} node numbers are taken: remove retired nodes from the nodes table"
    )


def node_statuses(
    engine: Engine, timeout: float, now: float | None = None, *, count_active: bool = True
) -> list[NodeStatus]:
    """Every registered node, up or down, with its active timers (0 unless
    ``count_active``: the count reads every active timer of the fleet); by name."""
    now = time.time() if now is None else now
    with engine.connect() as connection:
        nodes = connection.execute(select(_nodes).order_by(_nodes.c.name)).all()
        active: dict[str, int] = (
            dict(
                connection.execute(
                    select(_timers.c.node, func.count())
                    .where(_timers.c.state == TimerState.ACTIVE)
                    .group_by(_timers.c.node)
                ).all()
            )
            if count_active
            else {}
        )
    return [
        NodeStatus(
            node.name,
            "up" if now - node.last_seen <= timeout else "down",
            node.last_seen,
            node.version,
            int(active.get(node.name, 0)),
        )
        for node in nodes
    ]


class NodeBeat:
    """Stamps this node's ``last_seen`` every ``interval`` seconds."""

    def __init__(self, engine: Engine, name: str, interval: float) -> None:
        self._engine = engine
        self._name = name
        self._rounds = Periodic("timer-node-beat", interval, self.beat, on_error=self._failed)
        self.failures = 0
        # Failures since the last beat that went through: only the first is logged, so
        # an outage of the database is a line here, not one every beat.
        self._failing = 0

    def beat(self) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(_nodes).where(_nodes.c.name == self._name).values(last_seen=time.time())
            )
        if self._failing:
            logger.warning("node heartbeat sent again after %d failed", self._failing)
            self._failing = 0

    def start(self) -> None:
        self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    def _failed(self, error: Exception) -> None:
        # Other nodes will see this one as down: say why here.
        self.failures += 1
        self._failing += 1
        if self._failing == 1:
            logger.error(
                "node heartbeat failed (other nodes will see this one down until it beats "
                "again): %s",
                one_line(error),
            )
