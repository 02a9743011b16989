"""Which collective hung: every rank's flight recorder, read per process group.

A rank that skipped a collective (its control flow diverged), ranks that called
different collectives or sizes at one sequence number, a rank stuck in another process
group: from their stacks all ranks look alike ("waiting in all_reduce"), but their
flight recorders differ. Per process group, this names the last collective every
member entered, the members that never entered the next one, and the sequence numbers
where members recorded a different op, size or dtype. The ranks it names are the
suspects of the ``collective`` rule (contract 10).

A rank with no recorder (none captured) is never called missing: nothing says it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .collective_finding import CollectiveFinding
from .collective_phrases import finding_phrase, sizes_text, summary_phrase
from .flight_recorder import CollectiveEntry, RankRecorder

__all__ = ["CollectiveAnalysis", "CollectiveFinding", "analyse_collectives", "finding_phrase"]

_FIELDS = ("op", "sizes", "dtypes")


@dataclass(frozen=True, slots=True)
class CollectiveAnalysis:
    findings: tuple[CollectiveFinding, ...]
    suspects: tuple[int, ...]
    summary: str  # "" when there is nothing to say
    dropped: tuple[tuple[int, tuple[str, ...]], ...]  # (rank, what its dump lost)

    def findings_json(self) -> list[dict[str, Any]]:
        return [finding.as_json() for finding in self.findings]


def analyse_collectives(
    recorders: Sequence[RankRecorder],
    members: Mapping[str, Iterable[int]] | None = None,
) -> CollectiveAnalysis:
    """Find the hung collectives of one job from its ranks' recorders.

    ``members`` names a group's ranks when the caller knows them; otherwise they come
    from the dumps' ``pg_config``, the default group ``'0'`` holds every rank captured,
    and another group holds the ranks whose recorder mentions it.
    """
    by_rank = {recorder.rank: recorder for recorder in recorders}
    findings: list[CollectiveFinding] = []
    for pg in sorted({g.pg for r in recorders for g in r.groups}, key=_group_order):
        given = (members or {}).get(pg)
        known = frozenset(given) if given is not None else _configured(recorders, pg)
        group_members = known or _mentioning(recorders, pg)
        if pg == "0" and not known:
            known = group_members = frozenset(by_rank)
        findings.extend(_group_findings(pg, group_members, bool(known), by_rank))
    suspects = sorted({rank for finding in findings for rank in finding.suspects()})
    dropped = tuple((r.rank, r.dropped) for r in recorders if r.dropped)
    return CollectiveAnalysis(tuple(findings), tuple(suspects), summary_phrase(findings), dropped)


def _group_findings(
    pg: str, members: frozenset[int], members_known: bool, by_rank: Mapping[int, RankRecorder]
) -> list[CollectiveFinding]:
    records = {r: by_rank[r].group(pg) for r in sorted(members) if r in by_rank}
    entered = {r: group.entered() if group else 0 for r, group in records.items()}
    if not entered:
        return []
    groups = [group for group in records.values() if group is not None]
    desc = next((g.desc for g in groups if g.desc), "")
    # Each rank's entries by sequence number (its latest for a repeated one), built once:
    # a hostile dump may hold thousands.
    by_seq = {r: {e.seq: e for e in g.entries} for r, g in records.items() if g is not None}
    found: list[CollectiveFinding] = []
    # The first sequence number where the members' recorded entries disagree.
    for seq in sorted({seq for entries in by_seq.values() for seq in entries}):
        present = {r: entries[seq] for r, entries in by_seq.items() if seq in entries}
        mismatch = _mismatch(present)
        if mismatch is not None:
            found.append(_finding(pg, desc, seq, present, entered, mismatch, members_known))
            break
    last_common, last = min(entered.values()), max(entered.values())
    if last > last_common and not any(f.seq == last_common + 1 for f in found):
        seq = last_common + 1
        present = {r: entries[seq] for r, entries in by_seq.items() if seq in entries}
        found.append(_finding(pg, desc, seq, present, entered, None, members_known))
    elif not members_known and last > 0 and not found:
        # Nobody said who else is in this group: its newest collective, if unfinished,
        # is where its ranks wait, with peers unknown.
        unfinished = [
            r
            for r, g in records.items()
            if g and g.last_completed is not None and g.last_completed < last
        ]
        waiting = {r: by_seq[r][last] for r in unfinished if last in by_seq[r]}
        if waiting:
            found.append(_finding(pg, desc, last, waiting, entered, None, members_known))
    return sorted(found, key=lambda finding: finding.seq)


def _finding(
    pg: str,
    desc: str,
    seq: int,
    present: Mapping[int, CollectiveEntry],
    entered: Mapping[int, int],
    mismatch: tuple[str, tuple[tuple[str, tuple[int, ...]], ...]] | None,
    members_known: bool,
) -> CollectiveFinding:
    ranks = tuple(sorted(r for r, last in entered.items() if last >= seq))
    missing = tuple(sorted(r for r, last in entered.items() if last < seq))
    # What most of the ranks there recorded (ties: the lowest rank's).
    sample = max(
        present.values(), key=lambda e: sum(x == e for x in present.values()), default=None
    )
    op = sample.op if sample else ""
    sizes, dtypes = (sample.sizes, sample.dtypes) if sample else ((), ())
    return CollectiveFinding(
        pg=pg,
        desc=desc,
        ranks=ranks,
        seq=seq,
        op=op,
        sizes=sizes,
        dtypes=dtypes,
        missing=missing,
        mismatch=mismatch,
        members_known=members_known,
        all_entered=min(entered.values()),
    )


def _mismatch(
    present: Mapping[int, CollectiveEntry],
) -> tuple[str, tuple[tuple[str, tuple[int, ...]], ...]] | None:
    for field in _FIELDS:
        values: dict[str, list[int]] = {}
        for rank, entry in sorted(present.items()):
            values.setdefault(_show(field, entry), []).append(rank)
        if len(values) > 1:
            return field, tuple((value, tuple(ranks)) for value, ranks in values.items())
    return None


def _show(field: str, entry: CollectiveEntry) -> str:
    if field == "sizes":
        return sizes_text(entry.sizes)
    return ", ".join(entry.dtypes) if field == "dtypes" else entry.op


def _configured(recorders: Sequence[RankRecorder], pg: str) -> frozenset[int]:
    """The members the ranks' ``pg_config`` list; a rank speaks only for a group it is in."""
    claims = [r.members.get(pg, frozenset()) for r in recorders]
    return frozenset().union(*(c for r, c in zip(recorders, claims, strict=True) if r.rank in c))


def _mentioning(recorders: Sequence[RankRecorder], pg: str) -> frozenset[int]:
    return frozenset(r.rank for r in recorders if r.group(pg) is not None)


def _group_order(pg: str) -> tuple[bool, int, str]:
    return not pg.isdigit(), int(pg) if pg.isdigit() and len(pg) < 20 else 0, pg
