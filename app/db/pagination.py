"""Keyset pagination, newest first (the cursor is the last id of the page before),
the bounded integer parameters of the read endpoints, and the refusal of query
parameters they do not know."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel
from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

from app.db.models import Page

__all__ = [
    "CURSOR_PATTERN",
    "MAX_PAGE_BYTES",
    "KnownQueryOnly",
    "OptionalIntQuery",
    "TimerIdPath",
    "json_size_bound",
    "paginate",
    "read_page",
    "refuse_unknown_query",
]

CURSOR_PATTERN = r"^\d{1,18}$"

# SQLite integers are 64-bit: larger numbers are refused at the door with a 422,
# rather than overflowing inside the database driver.
_INT64_MAX = 2**63 - 1
TimerIdPath = Annotated[int, Path(ge=1, le=_INT64_MAX)]
OptionalIntQuery = Annotated[int | None, Query(ge=-_INT64_MAX, le=_INT64_MAX)]

ModelT = TypeVar("ModelT", bound=BaseModel)

# A page stops at about this many bytes of JSON, whatever its limit: 1,000 timers with
# 1,024-character scope ids made one answer of 6 MB, and each answer is built whole in
# memory (and held until its client reads it). Clients follow ``next`` as for any page.
MAX_PAGE_BYTES = 1024 * 1024
_ROW_OVERHEAD_BYTES = 512
_CHUNK_ROWS = 100


async def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not take gets a 422, like a bad value: a
    misspelt filter (``?stat=killed``) would otherwise be ignored, and the answer
    would look like the filtered list while it is the whole one."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {param.alias for param in dependant.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", name],
                    "msg": f"unknown query parameter; this route takes {', '.join(sorted(known))}",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ],
        )


KnownQueryOnly = Annotated[None, Depends(refuse_unknown_query)]


def paginate(
    session: Session,
    query: SelectOfScalar[Any],
    id_column: Any,
    public: type[ModelT],
    limit: int,
    cursor: str | None,
) -> Page[ModelT]:
    """Up to ``limit`` items, fewer when they would pass about ``MAX_PAGE_BYTES``: then
    ``next`` goes on from the last one, as for a full page."""
    query = query.order_by(col(id_column).desc())
    if cursor is not None:
        query = query.where(col(id_column) < int(cursor))
    return read_page(session, query, public, limit)


def read_page(
    session: Session, ordered_query: SelectOfScalar[Any], public: type[ModelT], limit: int
) -> Page[ModelT]:
    """The first up to ``limit`` rows of ``ordered_query``, fewer when they would pass
    about ``MAX_PAGE_BYTES``; ``next`` is the last one's id when more follow it (what
    the following page goes on from, in the query's order)."""
    query = ordered_query.limit(limit + 1)
    items: list[ModelT] = []
    size = 0
    last_id: Any = None
    more = False
    # Rows in chunks, so a page cut short never fetched the rows it leaves out.
    result = session.exec(query.execution_options(yield_per=_CHUNK_ROWS))
    try:
        for row in result:
            if len(items) == limit or size >= MAX_PAGE_BYTES:
                more = True
                break
            items.append(public.model_validate(row, from_attributes=True))
            size += json_size_bound(row)
            last_id = row.id
    finally:
        result.close()
    return Page[ModelT](items=items, next=str(last_id) if more else None)


def json_size_bound(row: Any) -> int:
    """About the most bytes ``row`` takes in JSON: its text fields at 4 bytes a
    character (UTF-8, or escapes), plus room for the rest."""
    text = sum(len(value) for value in vars(row).values() if isinstance(value, str))
    return _ROW_OVERHEAD_BYTES + 4 * text
