"""``/nodes``: the services sharing this database, and whether each is up (contract 9)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from app.db.nodes import node_statuses
from app.db.pagination import KnownQueryOnly
from app.deps import ServiceDep, require_database

__all__ = ["NodePublic", "router"]

router = APIRouter(prefix="/nodes", tags=["nodes"])


class NodePublic(BaseModel):
    name: str
    status: str  # "up", or "down" once silent for --node-timeout seconds
    last_seen: float
    version: str
    active_timers: int


class NodePage(BaseModel):
    items: list[NodePublic]


@router.get("")
async def list_nodes(service: ServiceDep, _known: KnownQueryOnly) -> NodePage:
    """Every node that ever registered, by name; a node is ``down`` once its heartbeat
    is older than ``--node-timeout`` seconds."""
    require_database(service)
    statuses = await run_in_threadpool(node_statuses, service.engine, service.settings.node_timeout)
    return NodePage(
        items=[NodePublic.model_validate(status, from_attributes=True) for status in statuses]
    )
