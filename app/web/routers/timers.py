"""``/timers``: acquire (and heartbeat), release, list, read."""

from __future__ import annotations

import functools
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import PlainTextResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.access.callers import Caller, CallerDep, authorize, forbidden, is_privileged
from app.access.kernel_stacks import stack_for
from app.db import store
from app.db.database_status import DATABASE_ERRORS
from app.db.enum_fields import TimerStateField
from app.db.models import (
    AUTO,
    ErrorMessage,
    Page,
    Timer,
    TimerCreate,
    TimerPublic,
    TimerRelease,
)
from app.db.pagination import (
    CURSOR_PATTERN,
    KnownQueryOnly,
    OptionalIntQuery,
    TimerIdPath,
    paginate,
)
from app.deps import (
    JsonWrite,
    ReaderSlot,
    ServiceDep,
    SessionDep,
    database_unavailable,
    require_database,
    require_token,
)
from app.web.active_from_engine import active_page
from app.web.auto_timeouts import auto_timeout
from app.web.write_answers import answer, wait_recorded
from timer_core import RefusedError
from timer_core.engine import TimerState
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.labels import MAX_JOB_ID_LENGTH, MAX_RANK

__all__ = ["PAST_GRACE_SECONDS", "router"]

router = APIRouter(prefix="/timers", tags=["timers"])

Write = Annotated[None, Depends(require_token)]

# An expiration_time this far in the past is not a deadline that just passed (clock
# skew, a slow request), which fires at once, but almost surely a duration sent as
# unix seconds: {"expiration_time": 60} would otherwise kill the worker at once.
# Over HTTP only; the FIFO keeps torch's semantics.
PAST_GRACE_SECONDS = 5.0


def unprocessable(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so clients parse one format."""
    return HTTPException(
        422, detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


# Once per caller, not per request (a connection sends all its requests as one
# caller): a write then pays no new Origin, no text of who asks, no geteuid.
@functools.lru_cache(maxsize=1024)
def _origin(caller: Caller) -> Origin:
    """Where a request of this caller comes from, for the engine: a caller other than
    root, the service's uid and the admin token may act on its own processes only (an
    unidentified one is held to uid -1, which owns none). Over HTTP the service refuses
    itself and its ancestors outright, even observe-only timers."""
    owner = None if is_privileged(caller) else caller.uid if caller.uid is not None else -1
    return Origin("http", owner, caller.describe(), may_observe_self=False)


async def _refusal_recorded(service: ServiceDep) -> None:
    # The refusal is in the event log before the client hears of it (best effort: a
    # slow disk must not turn a 4xx into a 503, nor a database away delay it).
    await wait_recorded(service)


def _refusal_error(error: RefusedError) -> HTTPException:
    if error.kind == "forbidden":
        return forbidden(error.reason)
    if error.kind == "limit":
        # A rate or a full history passes: say when to retry (a cap does not).
        headers = (
            {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
            if error.retry_after is not None
            else None
        )
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, detail=error.reason, headers=headers
        )
    return unprocessable(error.field, error.reason)


async def _answer(
    service: ServiceDep, timer: TimerPublic, done: str, status_code: int = status.HTTP_200_OK
) -> Response:
    """``status_code`` once the request's events are committed; 202 (it is ``done``, not
    recorded yet) as soon as the database cannot take them (app.web.write_answers)."""
    return answer(timer, status_code, not_recorded=await wait_recorded(service), done=done)


def _not_behind(service: ServiceDep) -> None:
    """503 before the engine is touched while the recorder is behind (backpressure): an
    acquisition or heartbeat taken now could not be committed in time, and each one is
    memory. Releases are always taken: they end timers that already exist."""
    refusal = service.backpressure.refusal()
    if refusal is not None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=refusal, headers={"Retry-After": "1"}
        )


_ACCEPTED: dict[str, Any] = {
    "description": "Applied, not recorded yet: the database cannot be written now. "
    'The body is {"timer": timer, "recorded": false, "detail": why}; the events are '
    "written when the database returns (nothing to retry)"
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The body is not valid JSON",
        401: "Missing or wrong bearer token",
        403: "The caller may not act on this process (it belongs to another user)",
        404: "No such timer",
        409: "The timer is not active",
        415: "The body is not sent as JSON (content-type: application/json)",
        429: "The worker's user holds its maximum of active timers, is over its rate of "
        "requests, or the history is full (--max-db-size): see Retry-After",
        503: "The recorder is behind: nothing was armed or changed, retry",
    }
    return {code: {"model": ErrorMessage, "description": descriptions[code]} for code in codes}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TimerPublic,
    responses={
        200: {"model": TimerPublic, "description": "Heartbeat: deadline moved"},
        202: _ACCEPTED,
        **_errors(400, 401, 403, 409, 415, 429, 503),
    },
)
async def acquire(body: TimerCreate, access: JsonWrite) -> Response:
    service, caller = access.service, access.caller
    expires_in, timeout_source = body.expires_in, "explicit"
    if expires_in == AUTO:
        # The service chooses (contract 12): the scope's learned timeout, or the initial.
        choice = await auto_timeout(
            service.learned,
            service.database.problem() is not None,
            access.timers,
            body,
            time.monotonic(),
            caller,
        )
        expires_in, timeout_source = choice.seconds, choice.source
    now = time.time()
    expiration_time = now + expires_in if isinstance(expires_in, float) else body.expiration_time
    assert expiration_time is not None
    if body.expires_in is None and expiration_time < now - PAST_GRACE_SECONDS:
        raise unprocessable(
            "expiration_time",
            f"expiration_time {expiration_time!r} is {now - expiration_time:.3g} s in the past: "
            "it is unix seconds; to arm for a duration use expires_in",
        )
    if caller.uid is None and not caller.admin:
        # Nobody to check the worker's owner against: refused before the engine.
        raise forbidden(authorize(caller, None, f"arm a timer for pid {body.pid}") or "")
    _not_behind(service)
    request = ArmRequest(
        body.pid,
        body.scope_id,
        expiration_time,
        body.signal,
        body.dump_signal,
        body.labels(),
        timeout_source,
    )
    try:
        view, created = access.timers.acquire(request, _origin(caller))
    except RefusedError as error:
        await _refusal_recorded(service)
        raise _refusal_error(error) from None
    return await _answer(
        service,
        TimerPublic.from_timer(view),
        "the timer is armed" if created else "the timer's deadline is moved",
        status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )


@router.post(
    "/release",
    response_model=TimerPublic,
    responses={202: _ACCEPTED, **_errors(400, 401, 403, 404, 409, 415)},
)
async def release(body: TimerRelease, access: JsonWrite) -> Response:
    service, caller = access.service, access.caller
    try:
        view = access.timers.release(body.pid, body.scope_id, _origin(caller))
    except RefusedError as error:
        await _refusal_recorded(service)
        raise _refusal_error(error) from None
    if view is None:
        raise HTTPException(404, detail=f"no active timer for pid {body.pid} and that scope_id")
    return await _answer(
        service, TimerPublic.from_timer(view, ended_at=time.time()), "the timer is released"
    )


@router.delete(
    "/{timer_id}",
    response_model=TimerPublic,
    responses={202: _ACCEPTED, **_errors(401, 403, 404, 409, 503)},
)
async def delete(
    timer_id: TimerIdPath, service: ServiceDep, caller: CallerDep, _: Write
) -> Response:
    timers = service.timers_here()  # a hub keeps none: 409 (contract 9)
    try:
        view = timers.release_id(timer_id, _origin(caller))
    except RefusedError as error:
        await _refusal_recorded(service)
        raise _refusal_error(error) from None
    if view is None:
        # Only now the database: a timer this engine holds is released without it. Not
        # tried while it is known to be away, and read on a thread: on the event loop,
        # a server that hangs would stall every request with it.
        require_database(service)
        row = await run_in_threadpool(_stored_timer, service, timer_id)
        if row is None:
            raise HTTPException(404, detail=f"no timer {timer_id}")
        if row.state == "active" and row.node != service.settings.node:
            raise HTTPException(
                409, detail=f"timer {timer_id} is armed on node {row.node!r}: delete it there"
            )
        raise HTTPException(409, detail=f"timer {timer_id} is not active (it is {row.state})")
    return await _answer(
        service, TimerPublic.from_timer(view, ended_at=time.time()), "the timer is released"
    )


def _stored_timer(service: ServiceDep, timer_id: int) -> Timer | None:
    with Session(service.engine) as session:
        return store.timer(session, timer_id)


@router.get("", responses=_errors(503), response_model=Page[TimerPublic])
def list_timers(
    service: ServiceDep,
    _known: KnownQueryOnly,
    _slot: ReaderSlot,
    state: Annotated[TimerStateField | None, Query()] = None,
    pid: OptionalIntQuery = None,
    scope: Annotated[str | None, Query(max_length=1024)] = None,
    job: Annotated[str | None, Query(max_length=MAX_JOB_ID_LENGTH)] = None,
    rank: Annotated[int | None, Query(ge=0, lt=MAX_RANK)] = None,
    node: Annotated[str | None, Query(max_length=1024)] = None,
    restart_count: Annotated[int | None, Query(ge=0, lt=MAX_RANK)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Response:
    """Newest first. Pass ``next`` back as ``cursor`` for the following page. While the
    database is away, ``state=active`` is answered from this node's engine."""
    filters = store.TimerFilter(
        state=state,
        pid=pid,
        scope=scope,
        job=job,
        rank=rank,
        node=node,
        restart_count=restart_count,
    )
    problem = service.database.problem()
    if problem is None:
        try:
            with Session(service.engine) as session:
                query = filters.query()
                return _json(paginate(session, query, Timer.id, TimerPublic, limit, cursor))
        except DATABASE_ERRORS as error:
            problem = service.database.read_failed(error)
    page = active_page(service, filters, limit, cursor) if state == TimerState.ACTIVE else None
    if page is None:
        raise database_unavailable(problem)
    return _json(page)


def _json(page: Page[TimerPublic]) -> Response:
    # Serialized here, on the reader's thread and within its slot: returned as a model,
    # the page (up to 1 MiB) would be serialized on the event loop, and 300 of them at
    # once kept /healthz and every write waiting there for seconds.
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/{timer_id}/stack",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "The stack, as text"},
        403: {
            "description": "The caller may not read this worker's stack",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}
            },
        },
        404: {
            "description": "No stack was captured for this timer",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}
            },
        },
    },
)
def get_stack(
    timer_id: TimerIdPath, session: SessionDep, service: ServiceDep, caller: CallerDep
) -> PlainTextResponse:
    """The worker's stack captured before the signal. How it was captured is in
    the headers: ``X-Stack-Method`` (py-spy, faulthandler or proc), ``X-Stack-Seconds``.
    Only the worker's own user (and root, the service's user, the admin token) may
    read it: a stack shows what another user's program is doing. The kernel stack of a
    ``proc`` report is shown to root and the service's user alone
    (``X-Stack-Kernel: hidden`` says it was left out)."""
    timer = store.timer(session, timer_id)
    if timer is not None:
        refusal = authorize(caller, timer.uid, f"read the stack of timer {timer_id}")
        if refusal is not None:
            service.refused(
                ArmRequest(timer.pid, timer.scope_id, -1, timer.signal),
                Origin("http", caller.uid, caller.describe()),
                refusal,
            )
            raise forbidden(refusal)
    stack = store.stack(session, timer_id)
    if stack is None:
        raise HTTPException(404, detail=f"no stack was captured for timer {timer_id}")
    text, kernel = stack_for(caller, stack.method, stack.text)
    return PlainTextResponse(
        text,
        headers={
            "X-Stack-Method": stack.method,
            "X-Stack-Seconds": f"{stack.seconds:.3f}",
            "X-Stack-Truncated": "true" if stack.truncated else "false",
            **kernel,
        },
    )


@router.get("/{timer_id}", responses=_errors(404))
def get_timer(timer_id: TimerIdPath, session: SessionDep) -> TimerPublic:
    row = store.timer(session, timer_id)
    if row is None:
        raise HTTPException(404, detail=f"no timer {timer_id}")
    return TimerPublic.from_row(row)
