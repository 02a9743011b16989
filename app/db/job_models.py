"""Jobs and incidents (contract 8): their tables, and the shapes the API answers with.

A job is what torchrun's labels name; an incident is one hang of one job, with the
stack of each of its ranks, grouped by where they are, and the suspects named.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from app.db.collective_models import CollectiveFindingPublic, CollectiveGroupPublic
from app.db.sql_types import BIG_ID

__all__ = [
    "UNKNOWN_OWNER",
    "Incident",
    "IncidentCapture",
    "IncidentCapturePublic",
    "IncidentGroup",
    "IncidentPublic",
    "Job",
    "JobDetail",
    "JobPublic",
    "JobRank",
    "job_owner",
]


# A job's owner when its worker's uid is unknown: a key column cannot be null.
UNKNOWN_OWNER = -1


def job_owner(uid: int | None) -> int:
    return UNKNOWN_OWNER if uid is None else uid


class Job(SQLModel, table=True):
    """A distributed job, as its labelled timers show it: kept up to date by the
    recorder, so the jobs list never scans the timers."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_last_seen", "last_seen"),)

    job_id: str = SQLField(primary_key=True)
    # Whose job (migration 0009): a job id is any string a worker chose, so another
    # user's processes claiming it make a job of their own. UNKNOWN_OWNER: uid unknown.
    uid: int = SQLField(
        default=UNKNOWN_OWNER,
        sa_column=Column(BIG_ID, primary_key=True, server_default=str(UNKNOWN_OWNER)),
    )
    world_size: int | None = None
    first_seen: float
    last_seen: float
    incidents: int = SQLField(default=0, sa_column_kwargs={"server_default": "0"})


class Incident(SQLModel, table=True):
    """One hang of one job: the stacks of its ranks, grouped, with the suspects named.
    ``groups`` is ``[{group, ranks, frames}]``; the analysis is redone whenever a rank
    joins, so the row always holds the analysis of every capture below it."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_job_id_opened_at", "job_id", "opened_at"),)

    id: int | None = SQLField(default=None, primary_key=True)
    job_id: str
    opened_at: float
    node: str  # the node whose expiry opened it
    # Whose job: a job id is any string a worker chose, so only the processes of the
    # user whose expiry opened the incident join it (None: uid unknown).
    uid: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    trigger_timer_id: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    suspects: list[int | None] = SQLField(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    summary: str = ""
    groups: list[dict[str, Any]] = SQLField(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    nodes: list[str] = SQLField(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Contract 10 (migration 0013): ``[CollectiveFinding.as_json()]``, and the rule that
    # named each suspect, ``{rank: "collective" | "stack"}`` (rank as text, "null" for
    # a rank of unknown number).
    collective_findings: list[dict[str, Any]] = SQLField(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    suspect_rules: dict[str, str] = SQLField(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}")
    )


class IncidentCapture(SQLModel, table=True):
    """One rank of an incident: the process, what became of its timer, and the stack
    captured when the incident opened (or at its own expiry, if it joined later)."""

    __tablename__ = "incident_captures"
    __table_args__ = (UniqueConstraint("incident_id", "node", "pid"),)

    id: int | None = SQLField(default=None, primary_key=True)
    incident_id: int = SQLField(
        sa_column=Column(
            Integer, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    node: str
    pid: int
    uid: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    rank: int | None = None
    local_rank: int | None = None
    timer_id: int | None = SQLField(default=None, sa_column=Column(BIG_ID, nullable=True))
    # "captured" while its timer runs on; then its end: killed, expired, worker_gone...
    outcome: str
    group_number: int | None = None
    expired_at: float | None = None
    captured_at: float
    stack_method: str | None = None
    stack_note: str | None = None
    stack_text: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    # Its flight recorder, as ``RankRecorder.stored_json`` (migration 0013): None when
    # the worker's server gave none, or its rank is unknown.
    collectives: dict[str, Any] | None = SQLField(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )


class JobPublic(BaseModel):
    job_id: str
    # Beyond contract 8: whose job it is (the workers' uid; null if unknown).
    uid: int | None
    world_size: int | None
    ranks_seen: int
    active_timers: int
    nodes: list[str]
    first_seen: float
    last_seen: float
    incidents: int


class JobRank(BaseModel):
    """The latest timer of one rank of a job: its row's fields of the same names."""

    rank: int | None
    local_rank: int | None
    # How many times torchrun restarted the job's workers when this one was armed.
    restart_count: int | None = None
    node: str
    pid: int
    timer_id: int
    state: str
    scope_id: str
    last_seen: float


class JobDetail(JobPublic):
    ranks: list[JobRank]
    # Beyond contract 8: ranks left out past about 1 MiB of them (the first ones, by
    # rank, are listed). A worker's labels choose its rank, so one user could give a
    # job 100,000 ranks with 1 KiB scope ids, and one answer of hundreds of MB.
    ranks_omitted: int = 0


class IncidentCapturePublic(BaseModel):
    rank: int | None
    node: str
    pid: int
    timer_id: int | None
    outcome: str
    group: int | None
    # Beyond contract 8: the capture's own id (its stack is at
    # /incidents/{id}/captures/{capture_id}/stack), how it was taken, or why not.
    capture_id: int
    local_rank: int | None
    stack_method: str | None
    stack_note: str | None
    # Contract 10: how the rank's evidence was taken (py-spy, proc, worker-server), from
    # stack_method; null when there was no capture.
    method: str | None = None
    # Contract 10: its flight recorder per process group (the last entries of each),
    # null when its worker's server gave none.
    collectives: list[CollectiveGroupPublic] | None = None


class IncidentGroup(BaseModel):
    group: int
    ranks: list[int | None]
    frames: list[str]


class IncidentPublic(BaseModel):
    id: int
    job_id: str
    opened_at: float
    nodes: list[str]
    trigger_timer_id: int | None
    ranks: list[IncidentCapturePublic]
    groups: list[IncidentGroup]
    suspects: list[int | None]
    summary: str
    # Contract 10: what the ranks' flight recorders show, and which rule named each
    # suspect ({rank: "collective" | "stack"}; "null" for a rank of unknown number).
    collective_findings: list[CollectiveFindingPublic] = []
    suspect_rules: dict[str, str] = {}
