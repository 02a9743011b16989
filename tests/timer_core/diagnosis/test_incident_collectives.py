"""The incident analysis with flight recorders: the collective rule merged with the stack
rule (``incident.analyse``), on the recorded dumps of real hung torchrun jobs
(``collectives/``) and the recorded stacks (``stacks/``). No process runs here."""

from __future__ import annotations

import dataclasses

import pytest

from tests.timer_core.diagnosis.recorded import capture, recorder
from timer_core.diagnosis import analyse


def test_the_rank_that_skipped_a_collective_is_the_suspect_by_the_collective_rule() -> None:
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt", recorder=recorder("skip", 0)),
            capture(1, "gloo-sleep.txt", recorder=recorder("skip", 1)),
            capture(2, "gloo-allreduce.txt", recorder=recorder("skip", 2)),
        ]
    )
    assert result.suspects == (1,)
    assert result.suspect_rules == ((1, "collective"),)
    assert [(f.pg, f.seq, f.op, f.missing) for f in result.collective_findings] == [
        ("0", 4, "all_reduce", (1,))
    ]
    # The collective's words, then where the suspect's stack is: the waiting ranks'
    # place is already said ("wait in it").
    assert result.summary == (
        "rank 1 never joined all_reduce #4 (default group, [8] float32); "
        "ranks 0, 2 wait in it; rank 1 stuck in step (train.py:6)"
    )


def test_where_every_stack_waits_alike_the_recorders_tell_who_skipped() -> None:
    # Rank 1 skipped #4 and waits in the next all_reduce: its stack is its peers'. The
    # stack rule alone names all three.
    stacks = [capture(r, "gloo-allreduce.txt") for r in range(3)]
    assert analyse(stacks).suspects == (0, 1, 2)
    result = analyse(
        [capture(r, "gloo-allreduce.txt", recorder=recorder("skip", r)) for r in range(3)]
    )
    assert result.suspect_rules == ((1, "collective"),)
    assert result.summary.endswith(
        "; ranks 0, 2 wait in it; rank 1 stuck in all_reduce (train.py:7)"
    )


def test_a_rank_in_a_subgroup_while_the_others_wait_in_the_default_group() -> None:
    result = analyse(
        [capture(r, "gloo-allreduce.txt", recorder=recorder("subgroup", r)) for r in range(4)]
    )
    assert result.suspect_rules == ((1, "collective"),)
    assert [(f.pg, f.seq, f.missing) for f in result.collective_findings] == [
        ("0", 4, (1,)),
        ("1", 1, ()),
    ]
    assert result.summary.startswith(
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2-3 wait in it; "
        "rank 1 waits in all_reduce #1 (group 1, [8] float32), its peers unknown; "
    )


@pytest.mark.parametrize(
    ("scenario", "field", "words"),
    [
        ("op", "op", "op: ranks 0-1 all_reduce, rank 2 broadcast"),
        ("size", "sizes", "size: ranks 0-1 [8], rank 2 [16]"),
        ("dtype", "dtypes", "dtype: ranks 0-1 float32, rank 2 float64"),
    ],
)
def test_a_mismatch_names_the_odd_rank_though_all_stacks_look_alike(
    scenario: str, field: str, words: str
) -> None:
    result = analyse(
        [capture(r, "gloo-allreduce.txt", recorder=recorder(scenario, r)) for r in range(3)]
    )
    assert result.suspect_rules == ((2, "collective"),)
    (finding,) = result.collective_findings
    assert finding.mismatch is not None and finding.mismatch[0] == field
    assert result.summary == (
        f"all_reduce #3 (default group) differs in {words}; rank 2 stuck in all_reduce (train.py:7)"
    )


def test_a_stopped_rank_stays_a_suspect_beside_the_collective_rules() -> None:
    # Rank 3 stopped itself: no worker server answers for it, so it has no recorder,
    # and only /proc names it.
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt", recorder=recorder("skip", 0)),
            capture(1, "gloo-sleep.txt", recorder=recorder("skip", 1)),
            capture(2, "gloo-allreduce.txt", recorder=recorder("skip", 2)),
            capture(3, "proc-stopped.txt"),
        ]
    )
    assert result.suspects == (1, 3)
    assert result.suspect_rules == ((1, "collective"), (3, "stack"))
    assert result.summary == (
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2 wait in it; "
        "rank 1 stuck in step (train.py:6); rank 3 stopped (T, wchan do_signal_stop), no stack"
    )


def test_a_rank_with_no_stack_that_is_not_frozen_is_not_kept_beside_the_collective_rule() -> None:
    # The stack rule alone names rank 3 (nothing shows it waiting); /proc says it
    # sleeps, and its recorder says it entered every collective its peers did.
    captures = [
        capture(0, "gloo-allreduce.txt", recorder=recorder("subgroup", 0)),
        capture(1, "gloo-allreduce.txt", recorder=recorder("subgroup", 1)),
        capture(2, "gloo-allreduce.txt", recorder=recorder("subgroup", 2)),
        capture(3, "proc-only.txt", recorder=recorder("subgroup", 3)),
    ]
    assert 3 in analyse([dataclasses.replace(c, recorder=None) for c in captures]).suspects
    assert analyse(captures).suspect_rules == ((1, "collective"),)


def test_when_the_recorders_agree_the_stack_rules_suspects_stand() -> None:
    # Ranks 0 and 2 both entered #4; rank 1 has no recorder, and nothing says it is
    # missing: the stack rule names it.
    captures = [
        capture(0, "gloo-allreduce.txt", recorder=recorder("skip", 0)),
        capture(1, "gloo-sleep.txt"),
        capture(2, "gloo-allreduce.txt", recorder=recorder("skip", 2)),
    ]
    result = analyse(captures)
    assert result.collective_findings == ()
    assert result.suspect_rules == ((1, "stack"),)
    assert (
        result.summary == analyse([dataclasses.replace(c, recorder=None) for c in captures]).summary
    )
    assert (
        result.summary
        == "rank 1 stuck in step (train.py:6); ranks 0, 2 wait in all_reduce (train.py:7)"
    )


def test_a_recorder_of_a_rank_of_unknown_number_is_not_read() -> None:
    # Rank 1's recorder on a process with no rank label: it cannot be compared with its
    # peers, so it never makes the collective rule name anyone.
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt", recorder=recorder("skip", 0)),
            capture(None, "gloo-sleep.txt", recorder=recorder("skip", 1)),
            capture(2, "gloo-allreduce.txt", recorder=recorder("skip", 2)),
        ]
    )
    assert result.collective_findings == ()
    assert result.suspect_rules == ((None, "stack"),)
    assert result.suspects == (None,)


def test_a_recorder_is_compared_under_its_captures_rank() -> None:
    # The capture's rank label is what the peers know; a recorder read under another
    # number is taken as that rank's.
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt", recorder=recorder("skip", 0)),
            capture(1, "gloo-sleep.txt", recorder=recorder("skip", 1, as_rank=7)),
            capture(2, "gloo-allreduce.txt", recorder=recorder("skip", 2)),
        ]
    )
    assert result.suspect_rules == ((1, "collective"),)


def test_with_no_recorders_the_analysis_has_no_findings_and_only_stack_rules() -> None:
    result = analyse([capture(0, "gloo-allreduce.txt"), capture(1, "gloo-sleep.txt")])
    assert result.collective_findings == ()
    assert result.suspect_rules == ((1, "stack"),)
