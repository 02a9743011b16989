"""The one dependency of the writes that take a JSON body (arm, heartbeat, release):
the running service and the caller, once the admin token (401) and the content type
(415) are checked, in that order, as separate dependencies did before.

One dependency instead of four because FastAPI solves each dependency with a
recursive pass over the request (its parameters, its cache key, its kind of callable):
on these routes that was a fifth of the event loop's time per request
(docs/benchmarks.md). The caller stays a dependency of its own (``current_caller``),
so an app can still override who is calling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.access.callers import Caller, CallerDep
from app.deps import check_json, check_token, refuse_on_hub
from app.service import Service

__all__ = ["JsonWrite", "WriteAccess", "json_write_access"]


@dataclass(frozen=True, slots=True)
class WriteAccess:
    service: Service
    caller: Caller


async def json_write_access(request: Request, caller: CallerDep) -> WriteAccess:
    service: Service = request.app.state.service
    refuse_on_hub(service)
    check_token(request, service)
    check_json(request)
    return WriteAccess(service, caller)


JsonWrite = Annotated[WriteAccess, Depends(json_write_access)]
