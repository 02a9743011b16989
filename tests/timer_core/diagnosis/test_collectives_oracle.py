"""The oracle: torch's own flight-recorder analyzer (what ``torchfrtrace`` runs) reads the
same recorded dumps, and names the same missing ranks and odd ranks as ours.

gloo (torch 2.13) writes the default group's ``pg_config`` under ``''`` while its entries
say ``'0'``, and on the subgroup's members overwrites it with an empty rank list: torch's
analyzer then fails (``KeyError: ('0', 0)``). So the dumps are repaired for it here, with
the groups each recording script made: the default group of every rank, and the
subgroup ``[1, 2]`` of the ``subgroup`` scenario (given to our analysis too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from timer_core.diagnosis.collectives import analyse_collectives
from timer_core.diagnosis.flight_recorder import read_flight_recorder

builder = pytest.importorskip(
    "torch.distributed.flight_recorder.components.builder",
    reason="torch (a test extra) is not importable: torch's analyzer cannot run",
)
config_manager = pytest.importorskip("torch.distributed.flight_recorder.components.config_manager")

DUMPS = Path(__file__).with_name("collectives")
SUBGROUPS = {"subgroup": {"1": [1, 2]}}


def dumps(scenario: str) -> dict[int, dict[str, Any]]:
    paths = sorted((DUMPS / scenario).glob("rank*.json"))
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in paths}


def repaired(
    rank: int, dump: dict[str, Any], world: int, subgroups: dict[str, list[int]]
) -> dict[str, Any]:
    config = {key: value for key, value in dump["pg_config"].items() if key != ""}
    config["0"] = {"name": "0", "desc": "default_pg", "ranks": str(list(range(world)))}
    for pg, ranks in subgroups.items():
        if rank in ranks:
            config[pg] = {"name": pg, "desc": "undefined", "ranks": str(ranks)}
    return {**dump, "rank": rank, "host_name": f"rank{rank}", "pg_config": config}


def torch_answer(scenario: str) -> set[tuple[str, int, tuple[int, ...], tuple[int, ...]]]:
    """(group, sequence number, missing ranks, odd ranks) of each collective torch fails."""
    return torchs_findings(dumps(scenario), SUBGROUPS.get(scenario, {}))


def torchs_findings(
    by_rank: dict[int, dict[str, Any]], subgroups: dict[str, list[int]]
) -> set[tuple[str, int, tuple[int, ...], tuple[int, ...]]]:
    """torch's analyzer on the dumps of one job (``fr_trace_json`` of each rank), whose
    subgroups have the members ``subgroups`` names (gloo does not record them)."""
    details = {
        f"rank{rank}.json": repaired(rank, dump, len(by_rank), subgroups)
        for rank, dump in by_rank.items()
    }
    args = config_manager.JobConfig().parse_args(args=[])
    args.allow_incomplete_ranks = True
    version = str(next(iter(by_rank.values()))["version"])
    database = builder.build_db(details, args, version)
    return {
        (
            c.group_id.removesuffix(str(hash(frozenset(c.expected_ranks)))),
            c.collective_seq_id,
            tuple(sorted(c.missing_ranks or ())),
            tuple(sorted(c.mismatch_collectives or ())),
        )
        for c in database.collectives
        if not c.pass_check or c.missing_ranks
    }


def our_answer(scenario: str) -> set[tuple[str, int, tuple[int, ...], tuple[int, ...]]]:
    recorders = [read_flight_recorder(r, d) for r, d in dumps(scenario).items()]
    result = analyse_collectives(recorders, members=SUBGROUPS.get(scenario))
    return {(f.pg, f.seq, f.missing, f.suspects() if f.mismatch else ()) for f in result.findings}


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("skip", {("0", 4, (1,), ())}),
        ("subgroup", {("0", 4, (1,), ()), ("1", 1, (2,), ())}),
        ("op", {("0", 3, (), (2,))}),
        ("size", {("0", 3, (), (2,))}),
        ("dtype", {("0", 3, (), (2,))}),
    ],
)
def test_torchs_analyzer_agrees_on_the_recorded_dumps(
    scenario: str, expected: set[tuple[str, int, tuple[int, ...], tuple[int, ...]]]
) -> None:
    assert torch_answer(scenario) == expected
    assert our_answer(scenario) == expected


def test_torchs_analyzer_fails_on_glous_unrepaired_dumps() -> None:
    # Why the repair above: the quirk our reader handles itself.
    details = {
        f"rank{r}.json": {**d, "rank": r, "host_name": f"rank{r}"} for r, d in dumps("skip").items()
    }
    args = config_manager.JobConfig().parse_args(args=[])
    args.allow_incomplete_ranks = True
    with pytest.raises(KeyError):
        builder.build_db(details, args, "2.10")
