"""The collective findings of an incident in words an operator can act on, e.g.
``rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2 wait in it``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .collective_finding import CollectiveFinding
from .rank_words import rank_ranges

__all__ = ["MAX_PHRASES", "finding_phrase", "group_name", "sizes_text", "summary_phrase"]

MAX_PHRASES = 4


def summary_phrase(findings: Sequence[CollectiveFinding]) -> str:
    """One line for all the findings: each one's phrase, then who waits on whom."""
    parts = [finding_phrase(finding) for finding in findings[:MAX_PHRASES]]
    if len(findings) > MAX_PHRASES:
        parts.append(f"{len(findings) - MAX_PHRASES} more collective findings")
    parts.extend(_cross_waits(findings))
    return "; ".join(parts)


def finding_phrase(finding: CollectiveFinding) -> str:
    what = f"{finding.op or 'a collective'} #{finding.seq}"
    where = group_name(finding.pg, finding.desc)
    shape = " ".join(
        part for part in (sizes_text(finding.sizes), ", ".join(finding.dtypes)) if part
    )
    place = f"{what} ({where}, {shape})" if shape else f"{what} ({where})"
    if finding.mismatch is not None:
        field, values = finding.mismatch
        sides = ", ".join(f"{_ranks(ranks)} {value or '?'}" for value, ranks in values)
        text = f"{what} ({where}) differs in {_FIELD_WORDS.get(field, field)}: {sides}"
        if finding.missing:
            text += f"; {_ranks(finding.missing)} never joined it"
        return text
    if finding.missing:
        text = f"{_ranks(finding.missing)} never joined {place}"
        if finding.ranks:
            text += f"; {_ranks(finding.ranks)} wait{'s' if len(finding.ranks) == 1 else ''} in it"
        return text
    verb = "waits" if len(finding.ranks) == 1 else "wait"
    peers = "" if finding.members_known else ", its peers unknown"
    return f"{_ranks(finding.ranks)} {verb} in {place}{peers}"


def group_name(pg: str, desc: str) -> str:
    if desc == "default_pg" or (pg == "0" and desc in ("", "undefined")):
        return "default group"
    return f"group {desc}" if desc and desc != "undefined" else f"group {pg}"


def sizes_text(sizes: Sequence[Sequence[int]]) -> str:
    """``((8,), (2, 4))`` → ``"[8], [2, 4]"``."""
    return ", ".join("[" + ", ".join(str(dim) for dim in size) + "]" for size in sizes)


_FIELD_WORDS = {"op": "op", "sizes": "size", "dtypes": "dtype"}


def _cross_waits(findings: Sequence[CollectiveFinding]) -> list[str]:
    """Ranks each missing from a group the other waits in: a deadlock across groups."""
    phrases = []
    for index, first in enumerate(findings):
        for second in findings[index + 1 :]:
            if first.pg == second.pg:
                continue
            one = set(first.missing) & set(second.ranks)
            other = set(second.missing) & set(first.ranks)
            if one and other:
                phrases.append(
                    f"{_ranks(sorted(one | other), conjunction=True)} wait on each other "
                    f"across {group_name(first.pg, first.desc)} and "
                    f"{group_name(second.pg, second.desc)}"
                )
    return phrases


def _ranks(ranks: Sequence[int], conjunction: bool = False) -> str:
    if conjunction and len(ranks) == 2:
        return f"ranks {ranks[0]} and {ranks[1]}"
    return ("rank " if len(ranks) == 1 else "ranks ") + rank_ranges(ranks)
