"""Which rank hung: group a job's ranks by where their stacks are, and name the suspects.

When one rank of a distributed job hangs (a dead loader, a deadlock, a slow disk), every
other rank soon blocks in the next collective, waiting for it. So the ranks whose
timers expire are mostly victims; the culprit is the rank *not* waiting in a
collective while the others are. Where all ranks look alike (or none waits in a
collective), the odd one out is the smallest group of ranks stuck in the same place,
with the earliest expiry breaking ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .frames import Frame, StackFrames, parse_stack

__all__ = ["IncidentAnalysis", "RankCapture", "RankResult", "analyse", "rank_ranges"]

# A frame in one of these means the rank waits for its peers: torch.distributed's
# collectives and barriers (Python), and c10d's waits (native, with py-spy --native).
_COLLECTIVE_FILES = ("torch/distributed/", "distributed_c10d.py")
_COLLECTIVE_NATIVE = ("c10d::", "gloo::", "ncclComm", "nccl")
# Builtins a Python frame calls into, named as a person would (native frame → name).
_BUILTIN_NAMES = {"time_sleep": "time.sleep", "pysleep": "time.sleep", "select_select": "select"}


@dataclass(frozen=True, slots=True)
class RankCapture:
    """One rank as captured: its stack text is None when no stack could be taken."""

    rank: int | None
    pid: int
    node: str
    timer_id: int | None
    outcome: str  # the timer's end ("killed", "expired", …) or "captured" (not expired)
    expired_at: float | None
    stack: str | None


@dataclass(frozen=True, slots=True)
class RankResult:
    rank: int | None
    node: str
    pid: int
    timer_id: int | None
    outcome: str
    group: int | None  # None: no Python frames to compare


@dataclass(frozen=True, slots=True)
class IncidentAnalysis:
    ranks: tuple[RankResult, ...]
    groups: tuple[
        tuple[int, tuple[int | None, ...], tuple[str, ...]], ...
    ]  # (group, ranks, frames)
    suspects: tuple[int | None, ...]
    summary: str


def analyse(captures: Sequence[RankCapture]) -> IncidentAnalysis:
    """Group ``captures`` by their Python frames and name the suspect ranks."""
    parsed = [(capture, parse_stack(capture.stack or "")) for capture in captures]
    signatures: dict[tuple[tuple[str, str], ...], list[tuple[RankCapture, StackFrames]]] = {}
    for capture, frames in parsed:
        if frames.python:
            signatures.setdefault(frames.signature(), []).append((capture, frames))
    # Largest group first, so group 1 is where most ranks are; ties by earliest expiry.
    ordered = sorted(signatures.values(), key=lambda members: (-len(members), _earliest(members)))
    group_of = {id(c): number for number, members in enumerate(ordered, 1) for c, _ in members}
    results = tuple(
        RankResult(c.rank, c.node, c.pid, c.timer_id, c.outcome, group_of.get(id(c)))
        for c, _ in sorted(parsed, key=lambda item: _rank_order(item[0]))
    )
    groups = tuple(
        (
            number,
            tuple(sorted((c.rank for c, _ in members), key=_none_last)),
            _frame_lines(members[0][1]),
        )
        for number, members in enumerate(ordered, 1)
    )
    suspects = _suspects(ordered)
    return IncidentAnalysis(results, groups, suspects, _summary(ordered, suspects, captures))


def waits_in_collective(frames: StackFrames) -> Frame | None:
    """The torch.distributed frame this stack waits in, if it waits for its peers."""
    waiting = None
    for frame in frames.frames:
        if not frame.native and any(part in frame.file for part in _COLLECTIVE_FILES):
            return frame
        if frame.native and any(frame.function.startswith(p) for p in _COLLECTIVE_NATIVE):
            waiting = waiting or frame
    return waiting


def _suspects(
    ordered: list[list[tuple[RankCapture, StackFrames]]],
) -> tuple[int | None, ...]:
    members = [item for group in ordered for item in group]
    if not members:
        return ()
    waiting = [c for c, frames in members if waits_in_collective(frames) is not None]
    if waiting and len(waiting) < len(members):
        culprits = [c for c, frames in members if waits_in_collective(frames) is None]
    else:
        smallest = min(len(group) for group in ordered)
        candidates = [group for group in ordered if len(group) == smallest]
        chosen = min(candidates, key=_earliest)
        culprits = [c for c, _ in chosen]
    return tuple(sorted((c.rank for c in culprits), key=_none_last))


def _summary(
    ordered: list[list[tuple[RankCapture, StackFrames]]],
    suspects: tuple[int | None, ...],
    captures: Sequence[RankCapture],
) -> str:
    """One line: where the suspects are stuck, and where the others wait."""
    if not ordered:
        return f"no Python stack was captured for {_count(len(captures), 'process')}"
    suspect_set = set(suspects)
    parts: list[str] = []
    for group in ordered:
        ranks = [c.rank for c, _ in group]
        frames = group[0][1]
        if suspect_set & set(ranks):
            parts.append(f"{_ranks_phrase(ranks)} stuck in {_place(frames)}")
    for group in ordered:
        ranks = [c.rank for c, _ in group]
        if suspect_set & set(ranks):
            continue
        collective = waits_in_collective(group[0][1])
        verb = "wait in" if collective is not None else "in"
        where = collective.function if collective is not None else _place(group[0][1])
        parts.append(f"{_ranks_phrase(ranks)} {verb} {where}")
    missing = [c for c in captures if not parse_stack(c.stack or "").python]
    if missing:
        parts.append(f"no Python stack for {_ranks_phrase([c.rank for c in missing])}")
    return "; ".join(parts)


def _place(frames: StackFrames) -> str:
    """The innermost Python frame, named by the builtin it is in when that is known."""
    python = frames.python
    if not python:
        return "native code"
    innermost = python[0]
    for frame in frames.frames:
        if frame is innermost:
            break
        if frame.native and frame.function in _BUILTIN_NAMES:
            return f"{_BUILTIN_NAMES[frame.function]} ({innermost.where()})"
    return f"{innermost.function} ({innermost.where()})"


def _frame_lines(frames: StackFrames) -> tuple[str, ...]:
    return tuple(f"{frame.function} ({frame.where()})" for frame in frames.python)


def _ranks_phrase(ranks: Iterable[int | None]) -> str:
    known = sorted(rank for rank in ranks if rank is not None)
    unknown = sum(1 for rank in ranks if rank is None)
    words = []
    if known:
        words.append(("rank " if len(known) == 1 else "ranks ") + rank_ranges(known))
    if unknown:
        words.append(_count(unknown, "unlabelled process"))
    return " and ".join(words)


def rank_ranges(ranks: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2, 5, 7-8"``."""
    spans: list[list[int]] = []
    for rank in sorted(set(ranks)):
        if spans and rank == spans[-1][1] + 1:
            spans[-1][1] = rank
        else:
            spans.append([rank, rank])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'es' if n != 1 and noun.endswith('s') else 's' if n != 1 else ''}"


def _earliest(members: list[tuple[RankCapture, StackFrames]]) -> float:
    times = [c.expired_at for c, _ in members if c.expired_at is not None]
    return min(times) if times else float("inf")


def _rank_order(capture: RankCapture) -> tuple[bool, int, int]:
    return capture.rank is None, capture.rank or 0, capture.pid


def _none_last(rank: int | None) -> tuple[bool, int]:
    return rank is None, rank or 0
