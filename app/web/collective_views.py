"""What an incident's page shows of its collectives (contract 10): the collective
findings in words, one table per process group of each rank's last collectives (the
columns are sequence numbers), with each rank missing from a collective marked, and
which rule named each suspect.

Read from the incident as the API answers it (``IncidentPublic`` dumped to JSON): its
``collective_findings`` and ``suspect_rules``, and each rank's ``collectives``. That
JSON was written by this service, but an op name or a group's description came from a
worker's flight recorder, and a row may be older or newer than this code: whatever is
not of the stored shape is left out, never raised on. The page escapes every string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timer_core.diagnosis.collective_finding import CollectiveFinding
from timer_core.diagnosis.collective_phrases import finding_phrase, group_name, sizes_text

__all__ = ["SEQS_SHOWN", "collective_view", "suspect_rules"]

# A table shows this many of a group's newest sequence numbers, and every one a finding
# names: enough to see where the ranks part, narrow enough for the page.
SEQS_SHOWN = 6


def collective_view(incident: Mapping[str, Any], hidden: bool) -> dict[str, Any]:
    """The page's collectives part of ``incident`` (as dumped to JSON). ``hidden``: the
    reader may not read every rank's stack; what the ranks ran (ops, sizes, dtypes, and
    the findings' words) is left out as their frames are, who missed what stays."""
    findings = [
        finding
        for raw in _list(incident.get("collective_findings"))
        if (finding := CollectiveFinding.from_json(raw)) is not None
    ]
    records = _records(incident)
    return {
        "findings": [] if hidden else [finding_phrase(finding) for finding in findings],
        "findings_hidden": hidden and bool(findings),
        "tables": _tables(records, findings, hidden),
    }


def suspect_rules(incident: Mapping[str, Any]) -> dict[int | None, str]:
    """Which rule named each suspect (``collective`` or ``stack``), from the incident's
    ``suspect_rules``: pairs ``[rank, rule]``, objects ``{rank, rule}``, or an object
    from rank (as text) to rule. A rank it does not name is absent."""
    raw = incident.get("suspect_rules")
    pairs: list[tuple[object, object]] = []
    if isinstance(raw, dict):
        pairs = [(_rank_key(key), rule) for key, rule in raw.items()]
    for item in _list(raw):
        if isinstance(item, list | tuple) and len(item) == 2:
            pairs.append((item[0], item[1]))
        elif isinstance(item, dict):
            pairs.append((item.get("rank"), item.get("rule")))
    rules: dict[int | None, str] = {}
    for rank, rule in pairs:
        number = _int_or_none(rank)
        if isinstance(rule, str) and (rank is None or number is not None):
            rules[number] = rule
    return rules


# (pg, rank) -> that rank's record of the group, as stored.
_Records = dict[tuple[str, int], dict[str, Any]]


def _records(incident: Mapping[str, Any]) -> _Records:
    records: _Records = {}
    for rank in _list(incident.get("ranks")):
        if not isinstance(rank, dict) or not _is_int(rank.get("rank")):
            continue
        collectives = rank.get("collectives")
        if isinstance(collectives, dict):  # as a recorder is stored: {groups, members, ...}
            collectives = collectives.get("groups")
        for group in _list(collectives):
            if isinstance(group, dict) and isinstance(group.get("pg"), str):
                records.setdefault((group["pg"], rank["rank"]), group)
    return records


def _tables(
    records: _Records, findings: list[CollectiveFinding], hidden: bool
) -> list[dict[str, Any]]:
    missing = {(f.pg, f.seq, rank) for f in findings for rank in f.missing}
    pgs = sorted({pg for pg, _ in records} | {f.pg for f in findings}, key=_pg_order)
    tables = []
    for pg in pgs:
        ranks = {rank for group, rank in records if group == pg}
        ranks |= {rank for group, _, rank in missing if group == pg}
        entries = {rank: _entries(records.get((pg, rank))) for rank in ranks}
        named = {f.seq for f in findings if f.pg == pg}
        recorded = sorted({seq for by_seq in entries.values() for seq in by_seq} - named)
        newest = recorded[max(len(recorded) - max(SEQS_SHOWN - len(named), 0), 0) :]
        seqs = sorted(named | set(newest))
        rows = [
            _row(pg, rank, records.get((pg, rank)), entries[rank], seqs, missing, hidden)
            for rank in sorted(ranks)
        ]
        tables.append({"pg": pg, "name": _name(pg, records, findings), "seqs": seqs, "rows": rows})
    return tables


def _row(
    pg: str,
    rank: int,
    record: dict[str, Any] | None,
    by_seq: dict[int, dict[str, Any]],
    seqs: list[int],
    missing: set[tuple[str, int, int]],
    hidden: bool,
) -> dict[str, Any]:
    last_enqueued = _int_or_none((record or {}).get("last_enqueued"))
    entered = last_enqueued if last_enqueued is not None else max(by_seq, default=0)
    cells = []
    for seq in seqs:
        entry = by_seq.get(seq)
        cell: dict[str, Any] = {
            "seq": seq,
            "missing": (pg, seq, rank) in missing,
            "entered": entry is not None,
        }
        if entry is not None:
            cell |= {
                "op": "" if hidden else _text(entry.get("op")),
                "state": _text(entry.get("state")),
                "shape": "" if hidden else _shape(entry),
            }
        else:
            # Past what it entered: it never got there; else its record no longer
            # holds that entry (only the last few are kept).
            cell["state"] = "not entered" if seq > entered else ""
        cells.append(cell)
    return {
        "rank": rank,
        "recorded": record is not None,
        "last_enqueued": last_enqueued,
        "last_completed": _int_or_none((record or {}).get("last_completed")),
        "cells": cells,
    }


def _entries(record: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    by_seq: dict[int, dict[str, Any]] = {}
    for entry in _list((record or {}).get("entries")):
        if isinstance(entry, dict) and _is_int(entry.get("seq")):
            by_seq[entry["seq"]] = entry
    return by_seq


def _name(pg: str, records: _Records, findings: list[CollectiveFinding]) -> str:
    descs = [f.desc for f in findings if f.pg == pg and f.desc]
    descs += [
        g["desc"] for (p, _), g in records.items() if p == pg and isinstance(g.get("desc"), str)
    ]
    return group_name(pg, descs[0] if descs else "")


def _shape(entry: dict[str, Any]) -> str:
    sizes = [
        [dim for dim in size if _is_int(dim)]
        for size in _list(entry.get("sizes"))
        if isinstance(size, list)
    ]
    dtypes = [dtype for dtype in _list(entry.get("dtypes")) if isinstance(dtype, str)]
    return " ".join(part for part in (sizes_text(sizes), ", ".join(dtypes)) if part)


def _pg_order(pg: str) -> tuple[bool, int, str]:
    return not pg.isdigit(), int(pg) if pg.isdigit() and len(pg) < 20 else 0, pg


def _rank_key(key: str) -> int | str | None:
    if key in ("", "null", "None"):
        return None
    return int(key) if key.isdigit() and len(key) < 20 else key


def _list(raw: object) -> list[Any]:
    return raw if isinstance(raw, list) else []


def _is_int(raw: object) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def _int_or_none(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _text(raw: object) -> str:
    return raw if isinstance(raw, str) else ""
