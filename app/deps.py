"""Request dependencies: the running service, a DB session, the write token check,
the JSON content-type check of the routes that take a body, and the one dependency
of the timer writes that take one (``JsonWrite``)."""

from __future__ import annotations

import email.message
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlmodel import Session

from app.access.callers import (
    WRONG_TOKEN_DETAIL,
    Caller,
    CallerDep,
    current_caller,
    is_privileged,
    token_matches,
)
from app.access.reader_slots import EXEMPT
from app.service import Service
from timer_core import Reaper

__all__ = [
    "JSON_HINT",
    "JsonBody",
    "JsonWrite",
    "ReaderSlot",
    "ServiceDep",
    "SessionDep",
    "WriteAccess",
    "check_json",
    "check_token",
    "database_unavailable",
    "is_json_media_type",
    "json_write_access",
    "require_database",
    "require_json",
    "require_token",
]

JSON_HINT = "send the body as JSON with the header content-type: application/json"


async def get_service(request: Request) -> Service:
    # async: a sync dependency would cost a thread-pool hop on every request.
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def database_unavailable(problem: str) -> HTTPException:
    """The 503 of a read that needs the database while it is away (contract 14)."""
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"{problem}. History cannot be read until it returns; this node's active "
        "timers can: GET /timers?state=active. Kills go on meanwhile.",
        headers={"Retry-After": "5"},
    )


def require_database(service: Service) -> None:
    """A read that needs the database is refused at once while it is known to be away,
    instead of each one waiting for a connection that will fail (or hang)."""
    problem = service.database.problem()
    if problem is not None:
        raise database_unavailable(problem)


async def hold_reader_slot(service: ServiceDep, request: Request) -> AsyncIterator[None]:
    # A share of the pool (app.access.reader_slots), waited for on the event loop: readers
    # never take the connections the recorder and health need, and wait a bounded
    # time, then 503; one user's reads take at most its share of it.
    caller = await current_caller(request)
    async with service.readers.slot(EXEMPT if is_privileged(caller) else caller.uid):
        yield


# scope="function": the slot (and the session below) is given back once the route has
# built its answer, not after the client has read it: a client that never reads would
# otherwise hold a database connection for as long as its connection lives.
ReaderSlot = Annotated[None, Depends(hold_reader_slot, scope="function")]


def get_session(service: ServiceDep, _slot: ReaderSlot) -> Iterator[Session]:
    require_database(service)
    with Session(service.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def require_token(request: Request, service: ServiceDep) -> None:
    """With a token configured, a write needs ``Authorization: Bearer <token>``."""
    check_token(request, service)


def check_token(request: Request, service: Service) -> None:
    expected = service.settings.token
    if expected and not token_matches(expected, request.headers.get("authorization", "")):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=WRONG_TOKEN_DETAIL,
            headers={"WWW-Authenticate": "Bearer"},
        )


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any parameters:
    the types FastAPI parses as JSON (it is parsed the same way, so the two agree)."""
    if content_type == "application/json":
        return True  # what clients send; the parse below costs more than the rest of the check
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def require_json(request: Request) -> None:
    """A route with a JSON body refuses any other content type with a 415 that says
    what to send. Without it, FastAPI hands the raw bytes to the model and answers
    "Input should be a valid dictionary", which does not say what is wrong."""
    check_json(request)


def check_json(request: Request) -> None:
    given = request.headers.get("content-type")
    if given is None or not is_json_media_type(given):
        got = f"got content-type {given[:100]!r}" if given else "no content-type was sent"
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=f"{JSON_HINT} ({got})")


JsonBody = Annotated[None, Depends(require_json)]


@dataclass(frozen=True, slots=True)
class WriteAccess:
    service: Service
    timers: Reaper
    caller: Caller


async def json_write_access(request: Request, caller: CallerDep) -> WriteAccess:
    """The writes that take a JSON body (arm, heartbeat, release): the service, its
    timers and the caller, once the timers are known to be here (a hub has none: 409,
    contract 9), the admin token (401) and the content type (415) are checked, in that
    order.

    One dependency instead of four because FastAPI solves each dependency with a
    recursive pass over the request (its parameters, its cache key, its kind of
    callable): on these routes that was a fifth of the event loop's time per request
    (docs/benchmarks.md). The caller stays a dependency of its own
    (``current_caller``), so an app can still override who is calling."""
    service: Service = request.app.state.service
    timers = service.timers_here()
    check_token(request, service)
    check_json(request)
    return WriteAccess(service, timers, caller)


JsonWrite = Annotated[WriteAccess, Depends(json_write_access)]
