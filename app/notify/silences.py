"""Silences and maintenance windows (contract 11): for a time, notifications that
match are recorded as ``silenced`` instead of being sent.

Who may silence what: a user only its own uid's work (the silence's match gets the
caller's uid, and a match naming another uid is refused), so no user can mute what
another user's jobs tell; the admin may silence anything. The sender checks the
silences when it is about to send (``silenced_by``), so a window opened after a
notification was written still holds it, and one that ended lets the next ones go.

Bounded: a uid has at most ``MAX_SILENCES_PER_UID`` silences not ended, and all of
them together at most ``MAX_SILENCES`` (``TooManySilences``), so each send reads a
bounded few: the ones with no uid (the admin's) and its own uid's.

A comment is text its author chose: it is shown only to who may read the uid's work
(the uid itself, root, the service's user, the admin token), as an incident's frames
are (contract 7); others see that it is hidden and why (``seen_by``). A silence with
no uid is the admin's (a user's always names its own), and its comment is for all.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Connection, Engine, text

from app.access.callers import Caller, authorize
from app.notify.channels import Match, Subject, matches
from app.notify.tables import Silence

__all__ = [
    "MAX_SILENCES",
    "MAX_SILENCES_PER_UID",
    "MAX_SILENCE_SECONDS",
    "SilenceCreate",
    "SilencePublic",
    "TooManySilences",
    "add_silence",
    "delete_silence",
    "seen_by",
    "silence_row",
    "silenced_by",
    "silences",
]

# A silence longer than this is a channel to delete, not a window.
MAX_SILENCE_SECONDS = 90 * 86400
# Silences not ended yet: of one uid, and in all.
MAX_SILENCES_PER_UID = 100
MAX_SILENCES = 1000
_UNIX = Annotated[float, Field(ge=0, le=2**40, allow_inf_nan=False)]


class TooManySilences(Exception):
    """The caps above are reached; the message says which, and what to do."""


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: Match
    starts_at: _UNIX | None = None  # None: now
    ends_at: _UNIX
    comment: Annotated[str, StringConstraints(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _a_window(self) -> SilenceCreate:
        starts = self.starts_at if self.starts_at is not None else time.time()
        if self.ends_at <= time.time():
            raise ValueError("ends_at is in the past: the silence would mute nothing")
        if self.ends_at <= starts:
            raise ValueError("ends_at must come after starts_at (unix seconds)")
        if self.ends_at - starts > MAX_SILENCE_SECONDS:
            raise ValueError(
                f"a silence lasts at most {MAX_SILENCE_SECONDS // 86400} days; "
                "delete the channel instead"
            )
        return self


class SilencePublic(BaseModel):
    id: int
    match: Match
    starts_at: float
    ends_at: float
    comment: str
    created_by: str
    created_at: float
    active: bool

    @classmethod
    def of(cls, row: Any, now: float) -> SilencePublic:
        return cls(
            id=row.id,
            match=Match.model_validate_json(row.match),
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            comment=row.comment,
            created_by=row.created_by,
            created_at=row.created_at,
            active=row.starts_at <= now < row.ends_at,
        )


def add_silence(engine: Engine, given: SilenceCreate, by: str) -> SilencePublic:
    """Store ``given``; ``TooManySilences`` if its uid, or everyone, has too many."""
    now = time.time()
    values = {
        "match": given.match.model_dump_json(exclude_none=True),
        "starts_at": given.starts_at if given.starts_at is not None else now,
        "ends_at": given.ends_at,
        "comment": given.comment,
        "created_by": by,
        "uid": given.match.uid,
        "created_at": now,
    }
    with engine.begin() as connection:
        _check_room(connection, given.match.uid, now)
        inserted = connection.execute(
            Silence.__table__.insert().values(**values)  # type: ignore[attr-defined]
        ).inserted_primary_key
    assert inserted is not None
    row = SimpleNamespace(id=int(inserted[0]), **values)
    return SilencePublic.of(row, now)


def _check_room(connection: Connection, uid: int | None, now: float) -> None:
    standing = connection.execute(
        text(
            "SELECT count(*) AS total, coalesce(sum(CASE WHEN uid = :uid THEN 1 ELSE 0 END), 0)"
            " AS own FROM silences WHERE ends_at > :now"
        ),
        {"uid": uid, "now": now},
    ).one()
    if uid is not None and standing.own >= MAX_SILENCES_PER_UID:
        raise TooManySilences(
            f"uid {uid} has {standing.own} silences not ended, the most one uid may have "
            f"({MAX_SILENCES_PER_UID}): delete some (DELETE /silences/{{id}}) or widen one's "
            "match instead"
        )
    if standing.total >= MAX_SILENCES:
        raise TooManySilences(
            f"{standing.total} silences are not ended, the most the service keeps "
            f"({MAX_SILENCES}): delete some (DELETE /silences/{{id}}) or wait for them to end"
        )


def seen_by(caller: Caller, silence: SilencePublic) -> SilencePublic:
    """``silence`` as ``caller`` may see it: its comment hidden unless its uid's work is
    the caller's to read (see above)."""
    uid = silence.match.uid
    if uid is None or authorize(caller, uid, "read this silence's comment") is None:
        return silence
    return silence.model_copy(
        update={
            "comment": f"comment hidden: it is uid {uid}'s; only that user, root, the "
            "service's user or the admin token may read it"
        }
    )


def silences(engine: Engine, limit: int, include_ended: bool = False) -> list[SilencePublic]:
    """Newest first; only those not ended unless ``include_ended``."""
    now = time.time()
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT * FROM silences"
                + ("" if include_ended else " WHERE ends_at > :now")
                + " ORDER BY id DESC LIMIT :limit"
            ),
            {"now": now, "limit": limit},
        ).all()
    return [SilencePublic.of(row, now) for row in rows]


def silence_row(engine: Engine, silence_id: int) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT * FROM silences WHERE id = :id"), {"id": silence_id}
        ).first()


def delete_silence(engine: Engine, silence_id: int) -> SilencePublic | None:
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT * FROM silences WHERE id = :id"), {"id": silence_id}
        ).first()
        if row is None:
            return None
        connection.execute(text("DELETE FROM silences WHERE id = :id"), {"id": silence_id})
    return SilencePublic.of(row, time.time())


def silenced_by(connection: Connection, notification: dict[str, Any]) -> str | None:
    """Why ``notification`` (the sender's claimed row) is held back: the first silence
    in force that matches it, or None. Only the silences that can match it are read:
    those with no uid, and its own uid's (a bounded few, see above)."""
    now = time.time()
    rows = connection.execute(
        text(
            "SELECT id, match, comment, uid FROM silences"
            " WHERE starts_at <= :now AND ends_at > :now"
            " AND (uid IS NULL OR uid = :uid) ORDER BY id"
            f" LIMIT {MAX_SILENCES + MAX_SILENCES_PER_UID}"
        ),
        {"now": now, "uid": notification.get("uid")},
    ).all()
    subject = Subject(
        job=notification.get("job_id"),
        node=notification.get("node") or "",
        uid=notification.get("uid"),
        scope=notification.get("scope_id"),
    )
    for row in rows:
        if matches(Match.model_validate(json.loads(row.match)), subject):
            # The reason is the delivery's last_error, which GET /deliveries shows to
            # all: a user's comment stays out of it (see above).
            if row.uid is not None:
                return f"silence {row.id} (uid {row.uid}'s)"
            return f"silence {row.id}: {row.comment[:200]}"
    return None
