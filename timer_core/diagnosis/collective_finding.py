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
            # Beyond contract 10, so that a stored finding reads as the analysis wrote it
            # (``from_json``, ``collective_phrases``): the group's name, and whether its
            # members were known.
            "desc": self.desc,
            "members_known": self.members_known,
        }

    @classmethod
    def from_json(cls, raw: object) -> CollectiveFinding | None:
        """A finding as ``as_json`` stored it; None for anything else. A row written
        before ``desc`` and ``members_known`` were stored reads as a known group with
        no description."""
        if not isinstance(raw, dict):
            return None
        try:
            mismatch = raw.get("mismatch")
            return cls(
                pg=_text(raw["pg"]),
                desc=_text(raw.get("desc", "")),
                ranks=_ints(raw["ranks"]),
                seq=_int(raw["seq"]),
                op=_text(raw["op"]),
                sizes=tuple(_ints(size) for size in _list(raw.get("sizes", []))),
                dtypes=tuple(_text(dtype) for dtype in _list(raw.get("dtypes", []))),
                missing=_ints(raw["missing"]),
                mismatch=None
                if mismatch is None
                else (
                    _text(mismatch["field"]),
                    tuple(
                        (_text(side["value"]), _ints(side["ranks"]))
                        for side in _list(mismatch["values"])
                    ),
                ),
                members_known=raw.get("members_known", True) is True,
                all_entered=_int(raw.get("all_entered", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None

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


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"not a string: {type(raw).__name__}")
    return raw


def _int(raw: object) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise TypeError(f"not an integer: {type(raw).__name__}")
    return raw


def _list(raw: object) -> list[Any]:
    if not isinstance(raw, list):
        raise TypeError(f"not a list: {type(raw).__name__}")
    return raw


def _ints(raw: object) -> tuple[int, ...]:
    return tuple(_int(item) for item in _list(raw))
