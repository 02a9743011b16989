"""What the timer and job pages say of a worker that outlived its SIGKILL (contract 10):
``data-unkillable="true"`` while it is still alive, ``"exited"`` once it died at last,
and a sentence saying where the kernel holds (or held) it. Read from the timer's
``unkillable`` events: the first says it was stuck, a later one that it exited."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from app.db import store
from app.web.dashboard_text import unkillable_words

__all__ = ["unkillable_mark", "unkillable_marks"]


def unkillable_mark(details: Sequence[Any]) -> dict[str, str] | None:
    """The mark and its sentence, from one timer's ``unkillable`` details (oldest
    first); None if its worker never outlived its SIGKILL."""
    mapped = [detail for detail in details if isinstance(detail, dict)]
    stuck = next((detail for detail in mapped if not detail.get("exited")), None)
    if stuck is None:
        return None
    exited = next((detail for detail in mapped if detail.get("exited")), None)
    text = unkillable_words(stuck)
    if exited is not None:
        text += "; then it exited (" + unkillable_words(exited) + ")"
    return {"mark": "exited" if exited is not None else "true", "text": text}


def unkillable_marks(session: Session, timer_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """The mark of each of these timers whose worker outlived its SIGKILL."""
    marks = {}
    for timer_id, details in store.unkillable_details(session, timer_ids).items():
        mark = unkillable_mark(details)
        if mark is not None:
            marks[timer_id] = mark
    return marks
