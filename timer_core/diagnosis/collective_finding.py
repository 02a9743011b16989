"""One finding of the collective rule: in one process group, the collective some members
never entered, or the sequence number where members recorded different op, sizes or
dtypes; and whom it blames. Its own module so that the analysis (``collectives``) and
the words (``collective_phrases``) both read it, and neither the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CollectiveFinding"]


@dataclass(frozen=True, slots=True)
class CollectiveFinding:
    pg: str
    desc: str
    ranks: tuple[int, ...]  # the members that entered ``seq``
    seq: int
    op: str
    sizes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    missing: tuple[int, ...]  # the members that never entered ``seq``
    mismatch: tuple[str, tuple[tuple[str, tuple[int, ...]], ...]] | None  # field, values
    members_known: bool  # False: no dump said who the members are
    all_entered: int  # the last sequence number every member entered (0: none)

    def as_json(self) -> dict[str, Any]:
        mismatch = None
        if self.mismatch is not None:
            field, values = self.mismatch
            mismatch = {
                "field": field,
                "values": [{"value": value, "ranks": list(r)} for value, r in values],
            }
        return {
            "pg": self.pg,
            "ranks": list(self.ranks),
            "seq": self.seq,
            "op": self.op,
            "sizes": [list(s) for s in self.sizes],
            "dtypes": list(self.dtypes),
            "missing": list(self.missing),
            "mismatch": mismatch,
            "all_entered": self.all_entered,
        }

    def suspects(self) -> tuple[int, ...]:
        """Who the finding blames: the missing members, else the odd ones out."""
        if self.missing:
            return self.missing
        if self.mismatch is None:
            return ()
        groups = sorted(len(ranks) for _, ranks in self.mismatch[1])
        if groups[0] == groups[-1]:
            return ()  # no minority: nothing says which side is wrong
        return tuple(
            sorted(r for _, ranks in self.mismatch[1] if len(ranks) == groups[0] for r in ranks)
        )
