"""Which collective hung, on recorded dumps: each rank's ``fr_trace_json`` of real hung
torchrun jobs (torch 2.13, CPU, gloo), made by ``bench/record_flight_recorder.py`` (see
``collectives/README.md``). No process runs here."""

from __future__ import annotations

import json

import pytest

from tests.timer_core.diagnosis.recorded import recorders
from timer_core.diagnosis.collectives import (
    CollectiveAnalysis,
    CollectiveFinding,
    analyse_collectives,
    finding_phrase,
)


def analysis(scenario: str) -> CollectiveAnalysis:
    return analyse_collectives(recorders(scenario))


def test_a_rank_that_skipped_the_fourth_all_reduce_is_missing_from_it() -> None:
    result = analysis("skip")
    assert result.findings_json() == [
        {
            "pg": "0",
            "ranks": [0, 2],
            "seq": 4,
            "op": "all_reduce",
            "sizes": [[8]],
            "dtypes": ["float32"],
            "missing": [1],
            "mismatch": None,
            "all_entered": 3,
            "desc": "default_pg",
            "members_known": True,
        },
    ]
    assert result.suspects == (1,)
    assert result.dropped == ()
    assert result.summary == (
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2 wait in it"
    )


def test_each_ranks_collectives_are_its_groups_last_entries() -> None:
    by_rank = {r.rank: r for r in recorders("skip")}
    (group,) = by_rank[0].collectives_json(keep=2)
    assert group == {
        "pg": "0",
        "last_enqueued": 4,
        "last_completed": 3,
        "entries": [
            {
                "seq": 3,
                "op": "all_reduce",
                "sizes": [[8]],
                "dtypes": ["float32"],
                "state": "scheduled",
            },
            {
                "seq": 4,
                "op": "all_reduce",
                "sizes": [[8]],
                "dtypes": ["float32"],
                "state": "scheduled",
            },
        ],
    }
    assert [g["last_enqueued"] for g in by_rank[1].collectives_json()] == [3]
    assert by_rank[1].collectives_json(keep=0)[0]["entries"] == []


def test_a_rank_in_a_subgroup_while_the_others_wait_in_the_default_group() -> None:
    # gloo's dumps do not say who is in the subgroup (its pg_config entry is overwritten
    # with an empty rank list), so without more the subgroup's peers are unknown.
    result = analysis("subgroup")
    assert [(f.pg, f.seq, f.ranks, f.missing, f.all_entered) for f in result.findings] == [
        ("0", 4, (0, 2, 3), (1,), 3),
        ("1", 1, (1,), (), 1),
    ]
    assert result.suspects == (1,)
    assert result.dropped == ()
    assert result.summary == (
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2-3 wait in it; "
        "rank 1 waits in all_reduce #1 (group 1, [8] float32), its peers unknown"
    )


def test_given_the_subgroups_members_both_groups_missing_ranks_are_named() -> None:
    result = analyse_collectives(recorders("subgroup"), members={"1": [1, 2]})
    assert [(f.pg, f.seq, f.ranks, f.missing) for f in result.findings] == [
        ("0", 4, (0, 2, 3), (1,)),
        ("1", 1, (1,), (2,)),
    ]
    assert result.suspects == (1, 2)
    assert result.summary.endswith(
        "rank 2 never joined all_reduce #1 (group 1, [8] float32); rank 1 waits in it; "
        "ranks 1 and 2 wait on each other across default group and group 1"
    )


@pytest.mark.parametrize(
    ("scenario", "field", "values", "words"),
    [
        ("op", "op", ["all_reduce", "broadcast"], "op: ranks 0-1 all_reduce, rank 2 broadcast"),
        ("size", "sizes", ["[8]", "[16]"], "size: ranks 0-1 [8], rank 2 [16]"),
        ("dtype", "dtypes", ["float32", "float64"], "dtype: ranks 0-1 float32, rank 2 float64"),
    ],
)
def test_a_mismatch_at_one_sequence_number_names_the_odd_rank(
    scenario: str, field: str, values: list[str], words: str
) -> None:
    result = analysis(scenario)
    (finding,) = result.findings_json()
    assert (finding["pg"], finding["seq"], finding["ranks"], finding["missing"]) == (
        "0",
        3,
        [0, 1, 2],
        [],
    )
    assert finding["mismatch"] == {
        "field": field,
        "values": [{"value": values[0], "ranks": [0, 1]}, {"value": values[1], "ranks": [2]}],
    }
    assert result.suspects == (2,)
    assert result.summary == f"all_reduce #3 (default group) differs in {words}"


def test_a_rank_with_no_recorder_is_never_called_missing() -> None:
    captured = [r for r in recorders("skip") if r.rank != 1]
    assert analyse_collectives(captured).findings == ()


def test_a_mismatch_with_no_minority_blames_no_one() -> None:
    finding = CollectiveFinding(
        pg="0",
        desc="default_pg",
        ranks=(0, 1),
        seq=2,
        op="all_reduce",
        sizes=((8,),),
        dtypes=("float32",),
        missing=(),
        mismatch=("op", (("all_reduce", (0,)), ("broadcast", (1,)))),
        members_known=True,
        all_entered=2,
    )
    assert finding.suspects() == ()
    assert finding_phrase(finding) == (
        "all_reduce #2 (default group) differs in op: rank 0 all_reduce, rank 1 broadcast"
    )


def test_phrases_name_groups_by_their_description_and_several_tensors() -> None:
    finding = CollectiveFinding(
        pg="3",
        desc="tp",
        ranks=(0, 1, 2),
        seq=7,
        op="all_gather",
        sizes=((2, 4), (2, 4)),
        dtypes=("bfloat16", "bfloat16"),
        missing=(3,),
        mismatch=None,
        members_known=True,
        all_entered=6,
    )
    assert finding_phrase(finding) == (
        "rank 3 never joined all_gather #7 (group tp, [2, 4], [2, 4] bfloat16, bfloat16); "
        "ranks 0-2 wait in it"
    )


@pytest.mark.parametrize("scenario", ["skip", "subgroup", "op", "size", "dtype"])
def test_a_stored_finding_reads_back_as_the_analysis_wrote_it(scenario: str) -> None:
    # The incident row stores findings as JSON; the page words them from there.
    for finding in analysis(scenario).findings:
        stored = json.loads(json.dumps(finding.as_json()))
        assert CollectiveFinding.from_json(stored) == finding


@pytest.mark.parametrize(
    "stored",
    [
        None,
        [],
        "all_reduce",
        {"pg": "0"},
        {"pg": 0, "ranks": [0], "seq": 1, "op": "x", "missing": []},
        {"pg": "0", "ranks": ["0"], "seq": 1, "op": "x", "missing": []},
        {"pg": "0", "ranks": [0], "seq": True, "op": "x", "missing": []},
        {"pg": "0", "ranks": [0], "seq": 1, "op": "x", "missing": [], "mismatch": "op"},
        {"pg": "0", "ranks": [0], "seq": 1, "op": "x", "missing": [], "mismatch": {"field": "op"}},
        {"pg": "0", "ranks": [0], "seq": 1, "op": "x", "missing": [], "sizes": [[1.5]]},
    ],
)
def test_anything_but_a_stored_finding_reads_as_none(stored: object) -> None:
    assert CollectiveFinding.from_json(stored) is None


def test_a_finding_stored_before_its_group_name_was_reads_as_a_known_group() -> None:
    (finding,) = analysis("skip").findings
    stored = {k: v for k, v in finding.as_json().items() if k not in ("desc", "members_known")}
    read = CollectiveFinding.from_json(stored)
    assert read is not None and finding_phrase(read) == finding_phrase(finding)
