"""What real hung torchrun jobs left, recorded for the diagnosis tests: py-spy and
faulthandler dumps and /proc reports (``stacks/``), each rank's flight-recorder dump
(``collectives/<scenario>/rank<N>.json``), and a rank's capture made of them."""

from __future__ import annotations

import json
from pathlib import Path

from timer_core.diagnosis import RankCapture
from timer_core.diagnosis.flight_recorder import RankRecorder, read_flight_recorder

__all__ = ["DUMPS", "STACKS", "capture", "recorder", "recorders", "stack"]

STACKS = Path(__file__).with_name("stacks")
DUMPS = Path(__file__).with_name("collectives")


def stack(name: str) -> str:
    return (STACKS / name).read_text()


def recorder(scenario: str, rank: int, as_rank: int | None = None) -> RankRecorder:
    """Rank ``rank``'s dump in ``scenario``, read as the recorder of ``as_rank`` (its own
    rank unless given)."""
    path = DUMPS / scenario / f"rank{rank}.json"
    return read_flight_recorder(rank if as_rank is None else as_rank, json.loads(path.read_text()))


def recorders(scenario: str) -> list[RankRecorder]:
    """Every rank's recorder in ``scenario``, by rank."""
    paths = sorted((DUMPS / scenario).glob("rank*.json"))
    assert paths, scenario
    return [read_flight_recorder(int(p.stem[4:]), json.loads(p.read_text())) for p in paths]


def capture(
    rank: int | None,
    stack_name: str | None,
    expired_at: float = 100.0,
    recorder: RankRecorder | None = None,
) -> RankCapture:
    """A killed rank's capture: the recorded stack ``stack_name`` (none if None), and
    its flight recorder if given."""
    return RankCapture(
        rank=rank,
        pid=1000 + (rank or 0),
        node="node-a",
        timer_id=rank,
        outcome="killed",
        expired_at=expired_at,
        stack=stack(stack_name) if stack_name else None,
        recorder=recorder,
    )
