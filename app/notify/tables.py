"""The notification tables (contract 11): channels, the outbox, its deliveries and the
silences.

- A **notification** is one thing to tell (an incident, a kill, an unkillable worker),
  written by the recorder in the transaction of the event that caused it; the
  service's own conditions (a node down, a loss, overdue kills) are written by
  ``app.notify.conditions``. ``key`` makes
  it one per incident (``incident:<id>``) or per timer: a later event of the same
  incident is folded into it (``folded`` counts them), not told again.
- A **delivery** is one notification to one channel, made by the sender when it fans
  the notification out. ``delivery_id`` is the id receivers see on every retry
  (``X-Timer-Service-Delivery``). ``lease_until`` and ``leased_by`` say which node is
  sending it, so nodes sharing a PostgreSQL database send each one once.

JSON values (events, match, the notification's body) are kept as text: the recorder
writes the outbox with plain SQL on both databases.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from app.db.sql_types import BIG_ID

__all__ = ["Channel", "Delivery", "Notification", "Silence"]


class Channel(SQLModel, table=True):
    __tablename__ = "channels"

    id: int | None = SQLField(default=None, primary_key=True)
    name: str
    # Secret as a whole: a webhook's path or a library URL carries tokens. Never shown.
    url: str = SQLField(sa_column=Column(Text, nullable=False))
    secret: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    events: str = SQLField(sa_column=Column(Text, nullable=False))  # JSON list
    match: str = SQLField(sa_column=Column(Text, nullable=False))  # JSON object
    created_at: float
    created_by: str


class Notification(SQLModel, table=True):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_fanned_out_id", "fanned_out", "id"),)

    id: int | None = SQLField(default=None, primary_key=True)
    key: str = SQLField(unique=True)
    kind: str  # incident | kill | unkillable | straggler | node_down | loss | overdue
    at: float
    node: str
    job_id: str | None = None
    uid: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    scope_id: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    timer_id: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    incident_id: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    body: str = SQLField(sa_column=Column(Text, nullable=False))  # JSON: the timer
    folded: int = SQLField(default=0, sa_column_kwargs={"server_default": "0"})
    fanned_out: bool = SQLField(default=False, sa_column_kwargs={"server_default": "0"})


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_state_next_at", "state", "next_at"),
        Index("ix_deliveries_channel_id_id", "channel_id", "id"),
    )

    id: int | None = SQLField(default=None, primary_key=True)
    delivery_id: str = SQLField(unique=True)
    notification_id: int = SQLField(sa_column=Column(BIG_ID, nullable=False))
    channel_id: int = SQLField(sa_column=Column(BIG_ID, nullable=False))
    # pending | delivered | failed | gave_up | silenced
    state: str
    attempts: int = SQLField(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: float
    next_at: float
    lease_until: float | None = None
    leased_by: str | None = None
    last_error: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    finished_at: float | None = None


class Silence(SQLModel, table=True):
    __tablename__ = "silences"
    __table_args__ = (Index("ix_silences_ends_at", "ends_at"),)

    id: int | None = SQLField(default=None, primary_key=True)
    match: str = SQLField(sa_column=Column(Text, nullable=False))  # JSON object
    starts_at: float
    ends_at: float
    comment: str = SQLField(sa_column=Column(Text, nullable=False))
    created_by: str
    # The uid whose work a user's silence mutes; None: the admin's, any.
    uid: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    created_at: float
