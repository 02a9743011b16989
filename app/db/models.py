"""Tables (timers and their events) and the REST schema families."""

from __future__ import annotations

import dataclasses
import math
import operator
from operator import attrgetter
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator
from sqlalchemy import JSON, Column, ForeignKey, Index, Text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from app.db.enum_fields import TimerStateField
from app.db.sql_types import BIG_ID
from timer_core import Timer as TimerSnapshot
from timer_core import TimerEvent
from timer_core.engine.admission import MAX_DEADLINE_SECONDS
from timer_core.engine.labels import MAX_JOB_ID_LENGTH, MAX_RANK, Labels
from timer_core.engine.request_text import MAX_SCOPE_LENGTH, scope_id_problem

__all__ = [
    "AUTO",
    "MAX_DEADLINE_SECONDS",
    "MAX_SCOPE_LENGTH",
    "SNAPSHOT_FIELDS",
    "ErrorMessage",
    "Event",
    "EventPublic",
    "Loss",
    "Node",
    "Page",
    "Stack",
    "Timer",
    "TimerBase",
    "TimerCreate",
    "TimerPublic",
    "TimerRelease",
    "timer_values",
]


# A timer's labels (contract 8) are columns of its row and fields of its answer, by name.
_LABEL_NAMES = tuple(field.name for field in dataclasses.fields(Labels))
# The body's labels in one C-level read, and what they are when it gives none.
_label_values = operator.attrgetter(*_LABEL_NAMES)
_NO_LABEL_VALUES = (None,) * len(_LABEL_NAMES)


class TimerBase(SQLModel):
    """A timer's fields as the API shows them, shared by the table row (``Timer``) and
    the answer (``TimerPublic``): a field added here is stored and shown."""

    id: int
    pid: int
    scope_id: str
    signal: int
    source: str
    state: str
    acquired_at: float
    expiration_time: float
    ended_at: float | None = None
    end_reason: str | None = None
    uid: int | None = SQLField(default=None, description="The worker's real uid, if known.")
    # Where the worker runs and which rank of which job it is (contract 8): null when
    # unknown, except ``node``, the service that armed the timer.
    node: str = SQLField(default="", description="The node whose service armed the timer.")
    job_id: str | None = SQLField(default=None, description="torchrun's TORCHELASTIC_RUN_ID.")
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    restart_count: int | None = SQLField(
        default=None, description="torchrun's TORCHELASTIC_RESTART_COUNT."
    )
    # How the deadline was chosen (contract 12): the request's own, or for an "auto"
    # request the initial timeout or the one learned from the scope's holds.
    timeout_source: str = SQLField(
        default="explicit",
        description="explicit, initial or learned (expires_in auto)",
        sa_column_kwargs={"server_default": "explicit"},
    )


class Timer(TimerBase, table=True):
    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_state_id", "state", "id"),
        Index("ix_timers_pid_id", "pid", "id"),
        Index("ix_timers_scope_id", "scope_id", "id"),
        Index("ix_timers_ended_at", "ended_at"),
        Index("ix_timers_job_id_id", "job_id", "id"),
        Index("ix_timers_node_id", "node", "id"),
        # A scope's newest holds of one owner's job (GET /scopes, learned timeouts) and
        # its replay, read from the index alone (app.db.scope_stats).
        Index(
            "ix_timers_scope_holds",
            "job_id",
            "uid",
            "scope_id",
            "state",
            "ended_at",
            "acquired_at",
            "end_reason",
        ),
    )

    # Assigned by the engine, never by the database (BIGINT on PostgreSQL: fleet ids).
    id: int = SQLField(sa_column=Column(BIG_ID, primary_key=True, autoincrement=False))
    # A uid is 32-bit unsigned: PostgreSQL's INTEGER stops at 2**31 - 1.
    uid: int | None = SQLField(
        default=None,
        description="The worker's real uid, if known.",
        sa_column=Column(BIG_ID, nullable=True),
    )
    # What the service needs to re-arm the timer after a restart; not shown.
    process_create_time: float | None = None
    dump_signal: int | None = None

    def labels(self) -> Labels:
        """The labels the timer was armed with (what a restart re-arms it with)."""
        return Labels(**{name: getattr(self, name) for name in _LABEL_NAMES})


class Stack(SQLModel, table=True):
    """The stack captured before a timer's worker was signalled (one per timer)."""

    __tablename__ = "stacks"

    timer_id: int = SQLField(
        sa_column=Column(BIG_ID, ForeignKey("timers.id", ondelete="CASCADE"), primary_key=True)
    )
    method: str
    captured_at: float
    seconds: float
    truncated: bool
    notes: list[str] = SQLField(default_factory=list, sa_column=Column(JSON, nullable=False))
    text: str = SQLField(sa_column=Column(Text, nullable=False))


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_timer_id_id", "timer_id", "id"),
        Index("ix_events_kind_id", "kind", "id"),
        Index("ix_events_at", "at"),
        Index("ix_events_node_id", "node", "id"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(BIG_ID, primary_key=True))
    timer_id: int | None = SQLField(
        default=None, sa_column=Column(BIG_ID, ForeignKey("timers.id"), nullable=True)
    )
    kind: str
    at: float
    # Whatever pid a request claimed, refused ones too (2**40 is refused, and recorded).
    pid: int = SQLField(sa_column=Column(BIG_ID, nullable=False))
    scope_id: str
    source: str
    detail: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The node whose service recorded it (contract 9); "" for events of before.
    node: str = SQLField(default="", sa_column_kwargs={"server_default": ""})


class Loss(SQLModel, table=True):
    """Events the service knows it lost (a full buffer, a row the database refused):
    kept across restarts, and reported by /healthz until an operator acknowledges them."""

    __tablename__ = "losses"

    id: int | None = SQLField(default=None, primary_key=True)
    at: float
    kind: str  # "dropped" or "rejected"
    count: int
    detail: str
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None


class Node(SQLModel, table=True):
    """A service sharing the database (contract 9): its number goes into every timer id
    it makes, so ids are unique across the fleet; ``last_seen`` is its heartbeat."""

    __tablename__ = "nodes"

    name: str = SQLField(primary_key=True)
    number: int = SQLField(unique=True)
    started_at: float
    last_seen: float
    version: str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _printable_job_id(value: str) -> str:
    # As the environment's TORCHELASTIC_RUN_ID is taken: printable text, no control
    # characters (a NUL cannot be stored on PostgreSQL, a newline forges log lines).
    if not value.isprintable():
        raise ValueError("job_id must be printable text, with no control characters")
    return value


JobId = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=MAX_JOB_ID_LENGTH),
    AfterValidator(_printable_job_id),
]


def _allowed_scope_id(value: str) -> str:
    # The engine's one rule (request_text), so nothing HTTP lets in is refused by the
    # FIFOs or the queue, and nothing they refuse enters here.
    problem = scope_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# The length bounds stay in the Field too, so the OpenAPI schema shows them.
ScopeId = Annotated[
    str, Field(min_length=1, max_length=MAX_SCOPE_LENGTH), AfterValidator(_allowed_scope_id)
]
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# A duration a timer may be armed for; or "auto": the service chooses (contract 12).
Duration = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=MAX_DEADLINE_SECONDS)]
AUTO = "auto"


class TimerCreate(_Strict):
    """Arm a timer: give ``expires_in`` (seconds from now) or ``expiration_time`` (unix)."""

    pid: StrictInt = Field(description="The worker's pid; it must be running on this host.")
    scope_id: ScopeId
    expires_in: Duration | Literal["auto"] | None = Field(
        default=None,
        description='Seconds from now; or "auto": the timeout learned from the scope\'s '
        "recent holds (GET /scopes), the initial timeout until it has enough of them",
    )
    expiration_time: Seconds | None = Field(default=None, gt=0)
    signal: StrictInt = Field(default=9, description="Signal at expiry; 0 means observe only.")
    dump_signal: StrictInt | None = Field(
        default=None,
        description="A signal on which the worker dumps its own Python stack (faulthandler), "
        "used when py-spy cannot read it.",
    )
    # Which rank of which job (contract 8); each overrides what the service reads from
    # the worker's environment (TORCHELASTIC_RUN_ID, RANK, LOCAL_RANK, WORLD_SIZE,
    # TORCHELASTIC_RESTART_COUNT).
    job_id: JobId | None = None
    rank: Annotated[StrictInt, Field(ge=0, lt=MAX_RANK)] | None = None
    local_rank: Annotated[StrictInt, Field(ge=0, lt=MAX_RANK)] | None = None
    world_size: Annotated[StrictInt, Field(ge=1, le=MAX_RANK)] | None = None
    restart_count: Annotated[StrictInt, Field(ge=0, lt=MAX_RANK)] | None = None

    @model_validator(mode="after")
    def _rank_in_world(self) -> TimerCreate:
        if self.rank is not None and self.world_size is not None and self.rank >= self.world_size:
            raise ValueError(
                f"rank {self.rank} is not below world_size {self.world_size}: ranks count from 0"
            )
        return self

    def labels(self) -> Labels | None:
        """The labels the request gives, or None if it gives none."""
        given = _label_values(self)
        # Most writes give none, and this runs on every POST /timers: that answer
        # builds no dict and no Labels.
        if given == _NO_LABEL_VALUES:
            return None
        return Labels(**dict(zip(_LABEL_NAMES, given, strict=True)))

    @model_validator(mode="after")
    def _one_deadline(self) -> TimerCreate:
        if (self.expires_in is None) == (self.expiration_time is None):
            raise ValueError("give exactly one of expires_in (seconds) or expiration_time (unix)")
        for value in (self.expires_in, self.expiration_time):
            if isinstance(value, float | int) and not math.isfinite(value):
                raise ValueError("the deadline must be a finite number")
        return self


class TimerRelease(_Strict):
    pid: StrictInt
    scope_id: ScopeId


class ErrorMessage(BaseModel):
    detail: str


# The names ``timer_values`` gives: the snapshot's fields, its labels' for ``labels``.
# The snapshot's own fields and its labels' fields, read by name in one call each:
# ``timer_values`` runs for every answer to a write and every recorded acquisition.
_TIMER_NAMES = tuple(f.name for f in dataclasses.fields(TimerSnapshot) if f.name != "labels")
_LABEL_NAMES = tuple(f.name for f in dataclasses.fields(Labels))
_read_timer = attrgetter(*_TIMER_NAMES)
_read_labels = attrgetter(*_LABEL_NAMES)
SNAPSHOT_FIELDS = frozenset(_TIMER_NAMES + _LABEL_NAMES)


def timer_values(timer: TimerSnapshot) -> dict[str, object]:
    """The engine's snapshot of a timer as the flat fields of its row and its answer,
    its labels among them: matched by name, so a field or a label added to the engine
    and to ``TimerBase`` (and the table) needs no third edit."""
    return dict(zip(_TIMER_NAMES, _read_timer(timer), strict=True)) | dict(
        zip(_LABEL_NAMES, _read_labels(timer.labels), strict=True)
    )


class TimerPublic(TimerBase):
    # Stored as text; answered as one of the states (the OpenAPI enum).
    state: TimerStateField

    # The one serializer from what the engine knows to the API's shape (the REST
    # answers, the dashboard's timers and recent ends).
    @classmethod
    def from_timer(cls, timer: TimerSnapshot, ended_at: float | None = None) -> TimerPublic:
        return cls.model_validate(timer_values(timer) | {"ended_at": ended_at})

    @classmethod
    def from_end(cls, event: TimerEvent) -> TimerPublic:
        """The timer as the event that ended it leaves it."""
        if not isinstance(event.timer, TimerSnapshot):
            raise ValueError(f"a {event.kind} event ends no timer")
        return cls.model_validate(
            timer_values(event.timer) | {"ended_at": event.at, "end_reason": event.reason()}
        )

    @classmethod
    def from_row(cls, row: Timer) -> TimerPublic:
        return cls.model_validate(row, from_attributes=True)


class EventPublic(BaseModel):
    id: int
    timer_id: int | None
    kind: str
    at: float
    pid: int
    scope_id: str
    source: str
    detail: dict[str, Any]
    node: str = ""


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    next: str | None = None
