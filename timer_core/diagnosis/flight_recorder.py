"""One rank's flight recorder, read from the JSON torch's ``fr_trace_json`` handler answers.

The JSON comes from a worker, which may be another user's process: it may have any
shape, huge lists or wrong types. Reading it never raises; everything kept is bounded
(entries, groups, tensors, dimensions, string lengths) and each thing left out is named
in ``dropped``.

gloo (torch 2.13) writes the default group's ``pg_config`` under the key ``''`` (with
empty name and desc) while its entries and ``pg_status`` call it ``'0'``; a subgroup
made later overwrites that same ``''`` key, with an empty rank list. So ``''`` is read
as the default group only when it lists ranks, and a subgroup's members are often
simply not in the dump.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DUMP_BYTES",
    "STORED_ENTRIES",
    "CollectiveEntry",
    "GroupRecord",
    "RankRecorder",
    "load_flight_recorder",
    "read_flight_recorder",
    "stored_recorder",
]

MAX_DUMP_BYTES = 4 << 20
MAX_ENTRIES = 2048  # torch's default ring buffer holds 2000
MAX_GROUPS = 64
MAX_TENSORS = 16
MAX_DIMS = 8
MAX_TEXT = 64
MAX_RANKS = 65536
MAX_NOTES = 8
# Entries per group an incident stores of each rank (``RankRecorder.stored_json``).
STORED_ENTRIES = 64
# c10's scalar type names, as torch users write them.
_DTYPES = {
    "Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16",
    "Long": "int64", "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8",
    "Bool": "bool", "ComplexFloat": "complex64", "ComplexDouble": "complex128",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CollectiveEntry:
    seq: int
    op: str  # "all_reduce": the profiling name without its backend ("gloo:")
    sizes: tuple[tuple[int, ...], ...]  # input sizes, one per tensor
    dtypes: tuple[str, ...]
    state: str

    def as_json(self) -> dict[str, Any]:
        sizes = [list(size) for size in self.sizes]
        return {
            "seq": self.seq,
            "op": self.op,
            "sizes": sizes,
            "dtypes": list(self.dtypes),
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class GroupRecord:
    pg: str
    desc: str
    last_enqueued: int | None
    last_completed: int | None
    entries: tuple[CollectiveEntry, ...]  # oldest first

    def entered(self) -> int:
        """The last sequence number this rank entered in the group (0: none)."""
        if self.last_enqueued is not None:
            return self.last_enqueued
        return max((entry.seq for entry in self.entries), default=0)

    def as_json(self, keep: int = 8) -> dict[str, Any]:
        kept = self.entries[-keep:] if keep > 0 else ()
        return {
            "pg": self.pg,
            "last_enqueued": self.last_enqueued,
            "last_completed": self.last_completed,
            "entries": [entry.as_json() for entry in kept],
        }


@dataclass(frozen=True, slots=True)
class RankRecorder:
    rank: int
    groups: tuple[GroupRecord, ...]
    members: Mapping[str, frozenset[int]]  # from pg_config, where it lists ranks
    dropped: tuple[str, ...]

    def group(self, pg: str) -> GroupRecord | None:
        return next((group for group in self.groups if group.pg == pg), None)

    def collectives_json(self, keep: int = 8) -> list[dict[str, Any]]:
        """Contract 10's ``collectives`` of this rank: the last ``keep`` entries per group."""
        return [group.as_json(keep) for group in self.groups]

    def stored_json(self, keep: int = STORED_ENTRIES) -> dict[str, Any]:
        """What an incident keeps of this recorder (``stored_recorder`` reads it back):
        every group with its last ``keep`` entries, the members, and what was dropped,
        not the megabytes of the dump."""
        return {
            "groups": [group.as_json(keep) | {"desc": group.desc} for group in self.groups],
            "members": {pg: sorted(ranks) for pg, ranks in self.members.items()},
            "dropped": list(self.dropped),
        }


def stored_recorder(rank: int, stored: object) -> RankRecorder:
    """Read back ``RankRecorder.stored_json``. The database is shared by every node of
    a fleet, so the row is read like a dump: any shape, bounded, never raising."""
    if not isinstance(stored, dict):
        return RankRecorder(rank, (), {}, (f"stored recorder is a {type(stored).__name__}",))
    notes: list[str] = []
    groups: list[GroupRecord] = []
    for raw in _list(stored.get("groups"), "groups", notes)[:MAX_GROUPS]:
        if not isinstance(raw, dict) or not isinstance(raw.get("pg"), str):
            notes.append("a stored group unreadable")
            continue
        kept = _list(raw.get("entries"), "entries", notes)[-MAX_ENTRIES:]
        entries = [_stored_entry(entry) for entry in kept]
        groups.append(
            GroupRecord(
                _text(raw["pg"]),
                _text(str(raw.get("desc", ""))),
                _int(raw.get("last_enqueued")),
                _int(raw.get("last_completed")),
                tuple(entry for entry in entries if entry is not None),
            )
        )
    members: dict[str, frozenset[int]] = {}
    for pg, ranks in list(_dict(stored.get("members"), "members", notes).items())[:MAX_GROUPS]:
        if isinstance(ranks, list):
            read = (_int(r) for r in ranks[:MAX_RANKS])
            members[_text(str(pg))] = frozenset(r for r in read if r is not None and r >= 0)
    kept_notes = _list(stored.get("dropped"), "dropped", notes)[: MAX_NOTES + 1]
    dropped = [_text(str(note)) for note in kept_notes] + notes
    return RankRecorder(rank, tuple(groups), members, tuple(dropped[: MAX_NOTES + 1]))


def _stored_entry(raw: object) -> CollectiveEntry | None:
    if not isinstance(raw, dict) or (seq := _int(raw.get("seq"))) is None:
        return None
    sizes, dtypes = raw.get("sizes"), raw.get("dtypes")
    return CollectiveEntry(
        seq=seq,
        op=_text(str(raw.get("op", ""))),
        sizes=tuple(_size(size) for size in sizes[:MAX_TENSORS]) if isinstance(sizes, list) else (),
        dtypes=tuple(_text(str(d)) for d in dtypes[:MAX_TENSORS])
        if isinstance(dtypes, list)
        else (),
        state=_text(str(raw.get("state", ""))),
    )


def load_flight_recorder(rank: int, raw: bytes) -> RankRecorder:
    """Read ``raw`` (the handler's body), refusing more than ``MAX_DUMP_BYTES``."""
    if len(raw) > MAX_DUMP_BYTES:
        return RankRecorder(rank, (), {}, (f"dump of {len(raw)} bytes over {MAX_DUMP_BYTES}",))
    try:
        dump = json.loads(raw)
    except (ValueError, RecursionError) as error:
        return RankRecorder(rank, (), {}, (f"not JSON: {_text(str(error))}",))
    return read_flight_recorder(rank, dump)


def read_flight_recorder(rank: int, dump: object) -> RankRecorder:
    """Read one rank's parsed ``fr_trace_json``; whatever cannot be read is dropped."""
    notes: list[str] = []
    if not isinstance(dump, dict):
        return RankRecorder(rank, (), {}, (f"dump is a {type(dump).__name__}, not an object",))
    entries = _list(dump.get("entries"), "entries", notes)
    if len(entries) > MAX_ENTRIES:
        notes.append(f"{len(entries) - MAX_ENTRIES} oldest entries over {MAX_ENTRIES}")
        entries = entries[-MAX_ENTRIES:]
    by_group: dict[str, list[CollectiveEntry]] = {}
    descs: dict[str, str] = {}
    for index, raw in enumerate(entries):
        read = _entry(raw)
        if read is None:
            notes.append(f"entry {index} unreadable")
        elif read[0] in by_group or len(by_group) < MAX_GROUPS:
            by_group.setdefault(read[0], []).append(read[2])
            descs.setdefault(read[0], read[1])
        else:
            notes.append(f"entry {index} of a group over {MAX_GROUPS}")
    status = _dict(dump.get("pg_status"), "pg_status", notes)
    names = set(by_group) | {_text(str(pg)) for pg in list(status)[:MAX_GROUPS]}
    groups = []
    for pg in sorted(names, key=_group_order):
        pg_status = status.get(pg)
        pg_status = pg_status if isinstance(pg_status, dict) else {}
        groups.append(
            GroupRecord(
                pg,
                descs.get(pg, ""),
                _int(pg_status.get("last_enqueued_collective")),
                _int(pg_status.get("last_completed_collective")),
                tuple(by_group.get(pg, ())),
            )
        )
    members = _members(_dict(dump.get("pg_config"), "pg_config", notes), notes)
    if len(notes) > MAX_NOTES:
        notes[MAX_NOTES:] = [f"and {len(notes) - MAX_NOTES} more"]
    return RankRecorder(rank, tuple(groups), members, tuple(notes))


def _entry(raw: object) -> tuple[str, str, CollectiveEntry] | None:
    if not isinstance(raw, dict):
        return None
    group = raw.get("process_group")
    seq = _int(raw.get("collective_seq_id"))
    if not isinstance(group, list) or len(group) != 2 or seq is None:
        return None
    name = _text(str(raw.get("profiling_name", "")))
    sizes = raw.get("input_sizes")
    dtypes = raw.get("input_dtypes")
    return (
        _text(str(group[0])),
        _text(str(group[1])),
        CollectiveEntry(
            seq=seq,
            op=name.split(":", 1)[-1],
            sizes=tuple(_size(size) for size in sizes[:MAX_TENSORS])
            if isinstance(sizes, list)
            else (),
            dtypes=tuple(_DTYPES.get(str(d), _text(str(d))) for d in dtypes[:MAX_TENSORS])
            if isinstance(dtypes, list)
            else (),
            state=_text(str(raw.get("state", ""))),
        ),
    )


def _members(config: dict[Any, Any], notes: list[str]) -> dict[str, frozenset[int]]:
    members: dict[str, frozenset[int]] = {}
    for key, value in list(config.items())[:MAX_GROUPS]:
        if not isinstance(value, dict) or not isinstance(value.get("ranks"), str):
            continue
        ranks_text = value["ranks"]
        if len(ranks_text) > 8 * MAX_RANKS:
            notes.append(f"pg_config {_text(str(key))!r}: rank list too long")
            continue
        ranks = frozenset(
            int(part)
            for part in ranks_text.strip("[] ").split(",")
            if part.strip().isdigit() and int(part) < MAX_RANKS
        )
        if ranks:
            members["0" if key == "" else _text(str(key))] = ranks
    return members


def _size(raw: object) -> tuple[int, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(dim for dim in (_int(d) for d in raw[:MAX_DIMS]) if dim is not None)


def _int(raw: object) -> int | None:
    """An int, or one written as a string (``pg_status`` writes them so); else None."""
    if isinstance(raw, str) and 0 < len(raw) <= 20 and raw.lstrip("-").isdigit():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and -(2**63) <= raw < 2**63:
        return raw
    return None


def _text(raw: str) -> str:
    return raw if len(raw) <= MAX_TEXT else raw[: MAX_TEXT - 1] + "…"


def _list(raw: object, what: str, notes: list[str]) -> list[Any]:
    if raw is None or isinstance(raw, list):
        return raw or []
    notes.append(f"{what} is a {type(raw).__name__}, not a list")
    return []


def _dict(raw: object, what: str, notes: list[str]) -> dict[Any, Any]:
    if raw is None or isinstance(raw, dict):
        return raw or {}
    notes.append(f"{what} is a {type(raw).__name__}, not an object")
    return {}


def _group_order(pg: str) -> tuple[bool, int, str]:
    return not pg.isdigit(), int(pg) if pg.isdigit() and len(pg) < 20 else 0, pg
