"""Keyset pagination, newest first (the cursor is the last id of the page before),
the bounded integer parameters of the read endpoints, and the refusal of query
parameters they do not know."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel
from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

from .models import Page

__all__ = [
    "CURSOR_PATTERN",
    "KnownQueryOnly",
    "OptionalIntQuery",
    "TimerIdPath",
    "paginate",
    "refuse_unknown_query",
]

CURSOR_PATTERN = r"^\d{1,18}$"

# SQLite integers are 64-bit: larger numbers are refused at the door with a 422,
# rather than overflowing inside the database driver.
_INT64_MAX = 2**63 - 1
TimerIdPath = Annotated[int, Path(ge=1, le=_INT64_MAX)]
OptionalIntQuery = Annotated[int | None, Query(ge=-_INT64_MAX, le=_INT64_MAX)]

ModelT = TypeVar("ModelT", bound=BaseModel)


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
    query = query.order_by(col(id_column).desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(col(id_column) < int(cursor))
    rows = session.exec(query).all()
    items = [public.model_validate(row, from_attributes=True) for row in rows[:limit]]
    more = len(rows) > limit
    return Page[ModelT](items=items, next=str(rows[limit - 1].id) if more else None)
