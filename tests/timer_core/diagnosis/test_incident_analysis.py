"""The incident analysis on recorded stacks: py-spy dumps of a real 4-rank torchrun job
(gloo, CPU) in which rank 1 slept while ranks 0, 2 and 3 waited in all_reduce, and a
faulthandler dump. No process runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from timer_core.diagnosis import RankCapture, analyse, parse_stack, rank_ranges
from timer_core.diagnosis.incident import waits_in_collective

STACKS = Path(__file__).with_name("stacks")


def stack(name: str) -> str:
    return (STACKS / name).read_text()


def capture(rank: int | None, name: str | None, expired_at: float = 100.0) -> RankCapture:
    return RankCapture(
        rank=rank,
        pid=1000 + (rank or 0),
        node="node-a",
        timer_id=rank,
        outcome="killed",
        expired_at=expired_at,
        stack=stack(name) if name else None,
    )


@pytest.mark.parametrize("native", [True, False])
def test_the_main_threads_python_frames_are_read_innermost_first(native: bool) -> None:
    suffix = "-native" if native else ""
    frames = parse_stack(stack(f"gloo-allreduce{suffix}.txt"))
    python = [(f.function, f.file.rsplit("/", 1)[-1], f.line) for f in frames.python]
    assert python == [
        ("all_reduce", "distributed_c10d.py", 3252),
        ("_exception_logger.<locals>.wrapper", "c10d_logger.py", 83),
        ("step", "train.py", 7),
        ("main", "train.py", 13),
        ("<module>", "train.py", 16),
    ]
    assert waits_in_collective(frames) is not None
    # The signature has no line numbers and no addresses.
    assert all(len(key) == 2 for key in frames.signature())


def test_native_and_plain_dumps_of_one_place_have_one_signature() -> None:
    native = parse_stack(stack("gloo-sleep-native.txt"))
    plain = parse_stack(stack("gloo-sleep.txt"))
    assert native.signature() == plain.signature()
    assert [f.function for f in native.frames if f.native] == ["clock_nanosleep", "time_sleep"]
    assert waits_in_collective(native) is None


def test_a_faulthandler_dump_is_read_too() -> None:
    frames = parse_stack(stack("faulthandler-step.txt"))
    assert [f.function for f in frames.python] == ["step", "main", "<module>"]


@pytest.mark.parametrize("native", [True, False])
def test_the_rank_not_waiting_in_a_collective_is_the_only_suspect(native: bool) -> None:
    suffix = "-native" if native else ""
    captures = [
        capture(0, f"gloo-allreduce{suffix}.txt", 101.0),
        capture(1, f"gloo-sleep{suffix}.txt", 103.0),  # expired last, still the culprit
        capture(2, f"gloo-allreduce{suffix}.txt", 100.0),
        capture(3, f"gloo-allreduce{suffix}.txt", 102.0),
    ]
    result = analyse(captures)
    assert result.suspects == (1,)
    assert [(g, ranks) for g, ranks, _ in result.groups] == [(1, (0, 2, 3)), (2, (1,))]
    assert {r.rank: r.group for r in result.ranks} == {0: 1, 1: 2, 2: 1, 3: 1}
    expected_place = "time.sleep (train.py:6)" if native else "step (train.py:6)"
    assert result.summary == f"rank 1 stuck in {expected_place}; ranks 0, 2-3 wait in all_reduce"


def test_with_no_collective_the_smallest_group_is_suspect_and_ties_go_to_the_earliest() -> None:
    result = analyse(
        [
            capture(0, "gloo-sleep.txt", 100.0),
            capture(1, "gloo-sleep.txt", 100.0),
            capture(2, "faulthandler-step.txt", 105.0),
        ]
    )
    assert result.suspects == (2,)
    tie = analyse([capture(0, "gloo-sleep.txt", 105.0), capture(1, "faulthandler-step.txt", 99.0)])
    assert tie.suspects == (1,)


def test_all_ranks_waiting_alike_names_them_all() -> None:
    result = analyse([capture(r, "gloo-allreduce.txt") for r in range(3)])
    assert result.suspects == (0, 1, 2)
    assert result.summary.startswith("ranks 0-2 stuck in all_reduce")


def test_ranks_without_a_stack_are_listed_but_never_suspected() -> None:
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt"),
            capture(1, "gloo-sleep.txt"),
            capture(2, None),
            capture(3, "proc-only.txt"),
        ]
    )
    assert result.suspects == (1,)
    assert {r.rank: r.group for r in result.ranks}[2] is None
    assert result.summary.endswith("no Python stack for ranks 2-3")


def test_unlabelled_processes_and_no_stacks_at_all() -> None:
    result = analyse([capture(None, None), capture(None, None)])
    assert result.suspects == () and result.groups == ()
    assert result.summary == "no Python stack was captured for 2 processes"


@pytest.mark.parametrize(
    ("ranks", "text"),
    [([0, 1, 2, 5, 7, 8], "0-2, 5, 7-8"), ([3], "3"), ([], ""), ([2, 2, 1], "1-2")],
)
def test_rank_ranges(ranks: list[int], text: str) -> None:
    assert rank_ranges(ranks) == text
