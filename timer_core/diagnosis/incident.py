"""Which rank hung: group a job's ranks by where their stacks are, and name the suspects.

When one rank of a distributed job hangs (a dead loader, a deadlock, a slow disk), every
other rank soon blocks in the next collective, waiting for it. So the ranks whose
timers expire are mostly victims; the culprit is the rank *not* waiting in a
collective while the others are. Where all ranks look alike (or none waits in a
collective), the odd one out is the smallest group of ranks stuck in the same place,
with the earliest expiry breaking ties.

A rank whose stack could not be taken is evidence, not a gap. Nothing shows it waiting,
so it is never passed over for the ranks that are; and what ``/proc`` said of it
(``proc_state``) names it: a rank stopped (``T``) or in the kernel (``D``) inside its
step is what its peers wait for, even when none of them waits in a collective.

Places are named by the innermost frame of the user's own code (``frames``), where an
operator can act, not by the library call it is blocked in.

When the ranks' flight recorders were captured too, the collective rule
(``collectives``) is merged in, and ``suspect_rules`` says which rule named each suspect:

- When the collective rule names ranks, they are the suspects (``collective``). It is
  the more specific rule: a rank that skipped an ``all_reduce`` and entered the next
  one looks, by its stack, like every rank waiting in ``all_reduce``; only the sequence
  numbers tell who never joined which.
- A rank the stack rule names from a frozen ``/proc`` state (``T``, ``t``, ``D``) stays
  a suspect beside them (``stack``): a stopped rank answers no worker server, so it has
  no recorder that could name it, and the collective rule cannot see it.
- When the collective rule names nobody (no recorders, or they all agree), the stack
  rule's suspects stand (``stack``).
- A rank of unknown number (``rank`` None) is never in the collective rule: a recorder
  is compared with its peers by its rank.

The summary puts the collective rule's words first, then the stack rule's; where the
collective rule named the suspects, the stacks add only where those suspects are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .collective_finding import CollectiveFinding
from .collectives import analyse_collectives
from .flight_recorder import RankRecorder
from .frames import Frame, StackFrames, parse_stack
from .proc_state import ProcState, read_proc_report
from .rank_words import count, rank_ranges, ranks_phrase

__all__ = [
    "IncidentAnalysis",
    "RankCapture",
    "RankResult",
    "analyse",
    "evidence_method",
    "rank_ranges",
]

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
    recorder: RankRecorder | None = None  # its flight recorder, when one was read


@dataclass(frozen=True, slots=True)
class RankResult:
    rank: int | None
    node: str
    pid: int
    timer_id: int | None
    outcome: str
    group: int | None  # None: no Python frames to compare
    proc: ProcState | None = None  # what /proc said, when there was no Python stack


@dataclass(frozen=True, slots=True)
class IncidentAnalysis:
    ranks: tuple[RankResult, ...]
    groups: tuple[
        tuple[int, tuple[int | None, ...], tuple[str, ...]], ...
    ]  # (group, ranks, frames)
    suspects: tuple[int | None, ...]
    summary: str
    collective_findings: tuple[CollectiveFinding, ...] = ()
    suspect_rules: tuple[tuple[int | None, str], ...] = ()  # (suspect, "collective"|"stack")


def evidence_method(stack_method: str | None) -> str | None:
    """How a rank's evidence was taken, as contract 10 names it (``py-spy``, ``proc``,
    ``worker-server``), from the capture's own method ("py-spy (python only)" is
    py-spy). A method the contract does not name ("faulthandler": the worker's own
    dump) stays as it is, rather than being passed off as another; None: no capture."""
    if stack_method is not None and stack_method.startswith("py-spy"):
        return "py-spy"
    return stack_method


# A rank with no Python frames, and what /proc said of it (None: nothing, or no report).
_Stackless = tuple[RankCapture, ProcState | None]


def analyse(captures: Sequence[RankCapture]) -> IncidentAnalysis:
    """Group ``captures`` by their Python frames and name the suspect ranks."""
    parsed = [(capture, parse_stack(capture.stack or "")) for capture in captures]
    signatures: dict[tuple[tuple[str, str], ...], list[tuple[RankCapture, StackFrames]]] = {}
    stackless: list[_Stackless] = []
    for capture, frames in parsed:
        if frames.python:
            signatures.setdefault(frames.signature(), []).append((capture, frames))
        else:
            stackless.append((capture, read_proc_report(capture.stack or "")))
    # Largest group first, so group 1 is where most ranks are; ties by earliest expiry.
    ordered = sorted(signatures.values(), key=lambda members: (-len(members), _earliest(members)))
    group_of = {id(c): number for number, members in enumerate(ordered, 1) for c, _ in members}
    proc_of = {id(c): state for c, state in stackless}
    results = tuple(
        RankResult(
            c.rank, c.node, c.pid, c.timer_id, c.outcome, group_of.get(id(c)), proc_of.get(id(c))
        )
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
    collective = analyse_collectives(_recorders(captures))
    named = _suspects(captures, _culprits(ordered, stackless), stackless, collective.suspects)
    rules = tuple(sorted(((c.rank, rule) for c, rule in named), key=lambda r: _none_last(r[0])))
    stack_summary = _summary(
        ordered,
        stackless,
        {id(c) for c, _ in named},
        len(captures),
        others=not collective.suspects,
    )
    summary = "; ".join(part for part in (collective.summary, stack_summary) if part)
    suspects = tuple(rank for rank, _ in rules)
    return IncidentAnalysis(results, groups, suspects, summary, collective.findings, rules)


def _recorders(captures: Sequence[RankCapture]) -> list[RankRecorder]:
    """The flight recorders of the ranks whose number is known, each under that number
    (the one its peers' recorders know it by)."""
    return [
        c.recorder if c.recorder.rank == c.rank else dataclasses.replace(c.recorder, rank=c.rank)
        for c in captures
        if c.recorder is not None and c.rank is not None
    ]


def _suspects(
    captures: Sequence[RankCapture],
    culprits: list[RankCapture],
    stackless: list[_Stackless],
    collective: Sequence[int],
) -> list[tuple[RankCapture, str]]:
    """The suspects' captures, each with the rule that named it (see the module's
    docstring for why the collective rule comes first)."""
    if not collective:
        return [(c, "stack") for c in culprits]
    named = set(collective)
    # One capture per rank the collective rule names (a rank captured twice, by two
    # nodes or across a restart, is one suspect).
    chosen = {c.rank: c for c in reversed(captures) if c.rank in named}
    frozen = {id(c) for c, state in stackless if state is not None and state.frozen}
    return [(c, "collective") for c in chosen.values()] + [
        (c, "stack") for c in culprits if id(c) in frozen and c.rank not in named
    ]


def waits_in_collective(frames: StackFrames) -> Frame | None:
    """The torch.distributed frame this stack waits in, if it waits for its peers."""
    waiting = None
    for frame in frames.frames:
        if not frame.native and any(part in frame.file for part in _COLLECTIVE_FILES):
            return frame
        if frame.native and any(frame.function.startswith(p) for p in _COLLECTIVE_NATIVE):
            waiting = waiting or frame
    return waiting


def _culprits(
    ordered: list[list[tuple[RankCapture, StackFrames]]],
    stackless: list[_Stackless],
) -> list[RankCapture]:
    members = [item for group in ordered for item in group]
    waiting = [c for c, frames in members if waits_in_collective(frames) is not None]
    # Not seen waiting: a stack elsewhere, or no stack at all.
    unseen = [c for c, frames in members if waits_in_collective(frames) is None]
    unseen += [c for c, _ in stackless]
    frozen = [c for c, state in stackless if state is not None and state.frozen]
    if waiting and unseen:
        culprits = unseen
    elif frozen:
        culprits = frozen
    elif ordered:
        smallest = min(len(group) for group in ordered)
        candidates = [group for group in ordered if len(group) == smallest]
        chosen = min(candidates, key=_earliest)
        culprits = [c for c, _ in chosen]
    else:
        culprits = []
    return culprits


def _summary(
    ordered: list[list[tuple[RankCapture, StackFrames]]],
    stackless: list[_Stackless],
    suspects: set[int],
    captured: int,
    others: bool = True,
) -> str:
    """One line: where the suspects (``id()`` of their captures) are stuck, or what
    /proc said of them, and (with ``others``) where the other ranks wait."""
    if not ordered and not suspects:
        return f"no Python stack was captured for {count(captured, 'process')}"
    parts: list[str] = []
    for group in ordered:
        ranks = [c.rank for c, _ in group if id(c) in suspects]
        if ranks:
            parts.append(f"{ranks_phrase(ranks)} stuck in {_place(group[0][1])}")
    # Suspects without a stack, those /proc described alike together.
    described: dict[str, list[int | None]] = {}
    for capture, state in stackless:
        if id(capture) in suspects:
            how = f"{state.describe()}, no stack" if state is not None else "gave no stack"
            described.setdefault(how, []).append(capture.rank)
    parts += [f"{ranks_phrase(ranks)} {how}" for how, ranks in described.items()]
    if not others:
        return "; ".join(parts)
    for group in ordered:
        ranks = [c.rank for c, _ in group if id(c) not in suspects]
        if ranks:
            waits = "wait in" if len(ranks) > 1 else "waits in"
            verb = waits if waits_in_collective(group[0][1]) is not None else "in"
            parts.append(f"{ranks_phrase(ranks)} {verb} {_place(group[0][1])}")
    missing = [c.rank for c, _ in stackless if id(c) not in suspects]
    if missing:
        parts.append(f"no Python stack for {ranks_phrase(missing)}")
    return "; ".join(parts)


def _place(frames: StackFrames) -> str:
    """Where a stack is, at the innermost frame of the user's own code: named by the
    collective it waits in, or the builtin that frame called (``time.sleep``), when
    there is one; else by that frame's function."""
    user = frames.innermost_user_frame()
    if user is None:
        return "native code"
    collective = waits_in_collective(frames)
    if collective is not None:
        return f"{collective.function} ({user.where()})"
    if user is frames.python[0]:
        for frame in frames.frames:
            if frame is user:
                break
            if frame.native and frame.function in _BUILTIN_NAMES:
                return f"{_BUILTIN_NAMES[frame.function]} ({user.where()})"
    return f"{user.function} ({user.where()})"


def _frame_lines(frames: StackFrames) -> tuple[str, ...]:
    return tuple(f"{frame.function} ({frame.where()})" for frame in frames.python)


def _earliest(members: list[tuple[RankCapture, StackFrames]]) -> float:
    times = [c.expired_at for c, _ in members if c.expired_at is not None]
    return min(times) if times else float("inf")


def _rank_order(capture: RankCapture) -> tuple[bool, int, int]:
    return capture.rank is None, capture.rank or 0, capture.pid


def _none_last(rank: int | None) -> tuple[bool, int]:
    return rank is None, rank or 0
