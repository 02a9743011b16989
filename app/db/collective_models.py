"""What ``GET /incidents/{id}`` answers of the collectives (contract 10): each rank's
flight recorder per process group, and the incident's findings. Both are read back
from rows that any node of a fleet may have written, through the library's defensive
readers (``stored_recorder``, ``CollectiveFinding.from_json``), so that a row of the
wrong shape gives less, never an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from timer_core.diagnosis.collective_finding import CollectiveFinding
from timer_core.diagnosis.flight_recorder import stored_recorder

__all__ = [
    "SHOWN_ENTRIES",
    "CollectiveEntryPublic",
    "CollectiveFindingPublic",
    "CollectiveGroupPublic",
    "CollectiveMismatch",
    "MismatchValue",
    "collectives_public",
    "findings_public",
]

# The last entries of each group a rank shows (an incident stores more, for the analysis).
SHOWN_ENTRIES = 8


class CollectiveEntryPublic(BaseModel):
    seq: int
    op: str
    sizes: list[list[int]]
    dtypes: list[str]
    state: str


class CollectiveGroupPublic(BaseModel):
    pg: str
    # Beyond contract 10: the group's description ("default_pg", a new_group's).
    desc: str
    last_enqueued: int | None
    last_completed: int | None
    entries: list[CollectiveEntryPublic]


class MismatchValue(BaseModel):
    value: str
    ranks: list[int]


class CollectiveMismatch(BaseModel):
    field: str  # "op", "sizes" or "dtypes"
    values: list[MismatchValue]


class CollectiveFindingPublic(BaseModel):
    pg: str
    ranks: list[int]
    seq: int
    op: str
    missing: list[int]
    mismatch: CollectiveMismatch | None
    # Beyond contract 10: the collective's sizes and dtypes, the last sequence number
    # every member entered, the group's description, and whether a dump named its members.
    sizes: list[list[int]]
    dtypes: list[str]
    all_entered: int
    desc: str
    members_known: bool


def collectives_public(rank: int | None, stored: object) -> list[CollectiveGroupPublic] | None:
    """A capture row's ``collectives`` column as a rank shows it (None: it has none)."""
    if stored is None or rank is None:
        return None
    recorder = stored_recorder(rank, stored)
    return [
        CollectiveGroupPublic.model_validate(group.as_json(SHOWN_ENTRIES) | {"desc": group.desc})
        for group in recorder.groups
    ]


def findings_public(stored: Any) -> list[CollectiveFindingPublic]:
    """An incident row's ``collective_findings``; what cannot be read is left out."""
    if not isinstance(stored, list):
        return []
    findings = (CollectiveFinding.from_json(raw) for raw in stored)
    return [
        CollectiveFindingPublic.model_validate(finding.as_json())
        for finding in findings
        if finding is not None
    ]
