"""Keyset pagination, newest first (the cursor is the last id of the page before),
and the bounded integer parameters of the read endpoints."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel
from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

from ..models import Page

__all__ = ["CURSOR_PATTERN", "OptionalIntQuery", "TimerIdPath", "paginate"]

CURSOR_PATTERN = r"^\d{1,18}$"

# SQLite integers are 64-bit: larger numbers are refused at the door with a 422,
# rather than overflowing inside the database driver.
_INT64_MAX = 2**63 - 1
TimerIdPath = Annotated[int, Path(ge=1, le=_INT64_MAX)]
OptionalIntQuery = Annotated[int | None, Query(ge=-_INT64_MAX, le=_INT64_MAX)]

ModelT = TypeVar("ModelT", bound=BaseModel)


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
