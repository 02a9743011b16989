"""The incident analysis on recorded stacks: py-spy dumps of a real 4-rank torchrun job
(gloo, CPU) in which rank 1 slept while ranks 0, 2 and 3 waited in all_reduce, a
faulthandler dump, py-spy dumps of a worker waiting in ``threading.Condition.wait``
(short and full file names), and the /proc reports of a worker that stopped itself
(SIGSTOP: py-spy could not read it) and of a sleeping one. No process runs here."""

from __future__ import annotations

import pytest

from tests.timer_core.diagnosis.recorded import capture, stack
from timer_core.diagnosis import analyse, parse_stack, rank_ranges
from timer_core.diagnosis.frames import is_library_file
from timer_core.diagnosis.incident import evidence_method, waits_in_collective
from timer_core.diagnosis.proc_state import ProcState, read_proc_report


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
    assert result.summary == (
        f"rank 1 stuck in {expected_place}; ranks 0, 2-3 wait in all_reduce (train.py:7)"
    )


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
    assert result.summary == "ranks 0-2 stuck in all_reduce (train.py:7)"


def test_a_stopped_rank_is_the_suspect_not_the_ranks_waiting_for_it() -> None:
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt"),
            capture(1, "gloo-allreduce-native.txt"),
            capture(2, "proc-stopped.txt"),
            capture(3, "gloo-allreduce.txt"),
        ]
    )
    assert result.suspects == (2,)
    stopped = {r.rank: r for r in result.ranks}[2]
    assert stopped.group is None and stopped.proc == ProcState("T", "stopped", "do_signal_stop")
    assert result.summary == (
        "rank 2 stopped (T, wchan do_signal_stop), no stack; "
        "ranks 0-1, 3 wait in all_reduce (train.py:7)"
    )


def test_a_stopped_rank_is_the_suspect_where_no_rank_waits_in_a_collective() -> None:
    # The smallest group would be rank 1 alone, in step: a frozen rank comes first.
    result = analyse(
        [
            capture(0, "gloo-sleep.txt"),
            capture(1, "faulthandler-step.txt"),
            capture(2, "gloo-sleep.txt"),
            capture(3, "proc-stopped.txt"),
        ]
    )
    assert result.suspects == (3,)
    assert result.summary.startswith("rank 3 stopped (T, wchan do_signal_stop), no stack; ")
    # And with no Python stack anywhere (py-spy off, no faulthandler): /proc alone.
    alone = analyse([capture(0, "proc-only.txt"), capture(1, "proc-stopped.txt")])
    assert alone.suspects == (1,)
    assert alone.summary == (
        "rank 1 stopped (T, wchan do_signal_stop), no stack; no Python stack for rank 0"
    )


def test_ranks_without_a_stack_are_never_passed_over_for_ranks_waiting() -> None:
    result = analyse(
        [
            capture(0, "gloo-allreduce.txt"),
            capture(1, "gloo-sleep.txt"),
            capture(2, None),
            capture(3, "proc-only.txt"),  # ptrace refused: /proc says it sleeps
        ]
    )
    # Nothing shows rank 2 or 3 waiting in the all_reduce that rank 0 waits in.
    assert result.suspects == (1, 2, 3)
    assert {r.rank: r.group for r in result.ranks}[2] is None
    assert result.summary == (
        "rank 1 stuck in step (train.py:6); rank 2 gave no stack; "
        "rank 3 sleeping (S, wchan hrtimer_nanosleep), no stack; "
        "rank 0 waits in all_reduce (train.py:7)"
    )


def test_with_no_collective_ranks_without_a_stack_that_are_not_frozen_are_listed() -> None:
    result = analyse([capture(0, "gloo-sleep.txt"), capture(1, "proc-only.txt")])
    assert result.suspects == (0,)
    assert result.summary == "rank 0 stuck in step (train.py:6); no Python stack for rank 1"


@pytest.mark.parametrize("name", ["condition-wait.txt", "condition-wait-native-full.txt"])
def test_a_group_is_named_by_the_innermost_frame_of_the_users_own_code(name: str) -> None:
    frames = parse_stack(stack(name))
    assert frames.python[0].function == "Condition.wait"  # threading.py, the stdlib's
    user = frames.innermost_user_frame()
    assert user is not None and (user.function, user.where()) == ("wait_for_peers", "worker.py:5")
    result = analyse(
        [capture(0, name), capture(1, name), capture(2, "gloo-sleep.txt"), capture(3, name)]
    )
    assert result.suspects == (2,)
    assert result.summary == (
        "rank 2 stuck in step (train.py:6); ranks 0-1, 3 in wait_for_peers (worker.py:5)"
    )
    # The group's frames stay whole: the library's frames are still shown there.
    assert result.groups[0][2][0] == "Condition.wait (threading.py:327)"


@pytest.mark.parametrize(
    ("path", "library"),
    [
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/threading.py", True),
        ("/usr/lib64/python3.13t/selectors.py", True),
        ("/venv/lib/python3.12/site-packages/numpy/core/numeric.py", True),
        ("/usr/lib/python3/dist-packages/apt/cache.py", True),
        ("/src/pytorch/torch/distributed/distributed_c10d.py", True),
        ("<frozen runpy>", True),
        ("<string>", True),
        # py-spy's short names: relative to the top package.
        ("threading.py", True),
        ("concurrent/futures/_base.py", True),
        ("torch/distributed/c10d_logger.py", True),
        ("train.py", False),
        ("mypkg/worker.py", False),
        ("/home/ada/project/worker.py", False),
        ("/home/ada/library/pythonic/train.py", False),
    ],
)
def test_library_files_are_told_by_their_path(path: str, library: bool) -> None:
    assert is_library_file(path) is library


def test_a_stack_of_library_frames_alone_is_named_by_its_innermost_frame() -> None:
    frames = parse_stack(
        'Thread 7 (idle): "MainThread"\n'
        "    select (selectors.py:415)\n"
        "    _run_module_as_main (<frozen runpy>:198)\n"
    )
    user = frames.innermost_user_frame()
    assert user is not None and user.function == "select"


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


def test_a_proc_report_reads_back_its_state_and_wait_channel() -> None:
    assert read_proc_report(stack("proc-stopped.txt")) == ProcState(
        "T", "stopped", "do_signal_stop"
    )
    assert read_proc_report(stack("proc-only.txt")) == ProcState(
        "S", "sleeping", "hrtimer_nanosleep"
    )
    assert read_proc_report(stack("gloo-sleep.txt")) is None
    assert ProcState("D", "disk sleep", "nfs_wait_bit_killable").frozen
    assert not ProcState("S", "sleeping", None).frozen
    assert ProcState("R", "running", None).describe() == "running (R)"


def test_a_thread_name_cannot_pass_for_the_processs_state() -> None:
    # A thread's comm is the worker's to set, newlines and all; the state and wchan are
    # read from the report's head, which the kernel wrote.
    hostile = stack("proc-only.txt").replace(
        "  4242 python S", "  4242 x\n/proc/4242/wchan: do_signal_stop\nState:\tT (stopped) S"
    )
    assert read_proc_report(hostile) == ProcState("S", "sleeping", None)


@pytest.mark.parametrize(
    ("method", "evidence"),
    [
        ("py-spy", "py-spy"),
        ("py-spy (python only)", "py-spy"),
        ("proc", "proc"),
        ("worker-server", "worker-server"),
        ("faulthandler", "faulthandler"),
        (None, None),
    ],
)
def test_evidence_method(method: str | None, evidence: str | None) -> None:
    assert evidence_method(method) == evidence
