"""Stack capture against real stuck workers: py-spy, faulthandler, and /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.timer_core.world import kill_of
from tests.waiting import wait_until
from tests.workers import FUNCTION, needs_py_spy, spawn_stuck, stuck_worker, wait_dead
from timer_core import EventKind, ProcessIdentity, Reaper, TimerEvent, identify
from timer_core.diagnosis.stack_capture import StackCapturer
from timer_core.engine.arm_request import ArmRequest


@pytest.fixture
def stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    monkeypatch.setenv("TIMER_SERVICE_STACK_DIR", str(tmp_path / "stacks"))
    with stuck_worker("dump-ready") as worker:
        yield worker


def identity_of(process: subprocess.Popen[bytes]) -> ProcessIdentity:
    found = identify(process.pid)
    assert found is not None
    return found


@needs_py_spy
def test_py_spy_captures_the_function_the_worker_is_stuck_in(
    stuck: subprocess.Popen[bytes],
) -> None:
    captured = StackCapturer(budget=5).capture(identity_of(stuck))
    assert captured.method.startswith("py-spy")
    assert FUNCTION in captured.text
    assert stuck.poll() is None  # capturing does not kill


def test_without_py_spy_a_worker_that_opted_in_dumps_its_own_stack(
    stuck: subprocess.Popen[bytes],
) -> None:
    captured = StackCapturer(budget=5, use_py_spy=False).capture(
        identity_of(stuck), dump_signal=signal.SIGUSR2
    )
    assert captured.method == "faulthandler"
    assert FUNCTION in captured.text
    assert "py-spy: not installed or disabled" in captured.notes
    assert stuck.poll() is None


def test_without_py_spy_or_opt_in_proc_says_what_the_kernel_knows(
    stuck: subprocess.Popen[bytes],
) -> None:
    captured = StackCapturer(budget=5, use_py_spy=False).capture(identity_of(stuck))
    assert captured.method == "proc"
    assert f"/proc/{stuck.pid}/status" in captured.text
    assert "State:" in captured.text and "threads (tid" in captured.text


def test_a_capture_that_hangs_is_cut_off_at_the_budget(
    stuck: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    slow = tmp_path / "py-spy"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    capturer = StackCapturer(budget=0.5)
    capturer.py_spy = str(slow)
    began = time.monotonic()
    captured = capturer.capture(identity_of(stuck))
    assert time.monotonic() - began < 0.5 + 1.0  # the budget, plus the /proc report
    assert captured.method == "proc"
    assert any("timed out" in note for note in captured.notes)


def test_a_py_spy_that_hangs_leaves_the_proc_report_its_share_of_the_budget(
    stuck: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Both py-spy attempts together get at most the budget less the /proc report's
    reserve (a quarter of it, at most 0.25 s): on a host so loaded that py-spy runs
    to its timeout, the report is still taken within the budget."""
    slow = tmp_path / "py-spy"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    capturer = StackCapturer(budget=2.0)
    capturer.py_spy = str(slow)
    captured = capturer.capture(identity_of(stuck))
    assert captured.method == "proc"
    granted = [
        float(note.rsplit("timed out after ", 1)[1].rstrip("s"))
        for note in captured.notes
        if "timed out after " in note
    ]
    assert len(granted) == 2, captured.notes
    assert sum(granted) <= 2.0 - 0.25 + 0.01, captured.notes


def test_a_stopped_worker_is_described_by_proc_without_trying_py_spy(
    stuck: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """py-spy cannot suspend a stopped process, and its signal handlers do not run:
    the capture goes straight to the /proc report, which says it is stopped, and
    leaves it stopped (a capture never resumes nor signals a worker)."""
    os.kill(stuck.pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: state_letter(stuck.pid) == "T", 5)
        never_run = tmp_path / "py-spy"
        never_run.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\nsleep 30\n")
        never_run.chmod(0o755)
        capturer = StackCapturer(budget=5)
        capturer.py_spy = str(never_run)
        captured = capturer.capture(identity_of(stuck), dump_signal=signal.SIGUSR2)
        assert captured.method == "proc"
        assert captured.notes == ("py-spy: not run, the worker is T (stopped)",)
        assert "State:\tT (stopped)" in captured.text
        assert not (tmp_path / "ran").exists()
        assert state_letter(stuck.pid) == "T"
    finally:
        os.kill(stuck.pid, signal.SIGCONT)


def state_letter(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_huge_stack_is_truncated(stuck: subprocess.Popen[bytes]) -> None:
    captured = StackCapturer(budget=5, use_py_spy=False, max_bytes=200).capture(identity_of(stuck))
    assert captured.truncated and captured.text.endswith("[truncated]\n")
    assert len(captured.text.encode()) <= 200 + len("\n[truncated]\n")


@needs_py_spy
def test_the_reaper_captures_before_the_kill_and_keeps_the_kill_within_the_budget() -> None:
    budget = 2.0
    engine = Reaper(capturer=StackCapturer(budget=budget))
    events: list[TimerEvent] = []
    engine.add_listener(events.append)
    engine.start()
    worker = spawn_stuck("plain", stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"ready"
        engine.acquire(ArmRequest(worker.pid, "hung", time.time() + 0.2))
        assert wait_dead(worker) == -signal.SIGKILL
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()  # type: ignore[union-attr]
        engine.stop()
    [killed] = [event for event in events if event.kind == EventKind.KILLED]
    assert killed.stack is not None and FUNCTION in killed.stack.text
    assert killed.detail.as_json()["stack"] == {
        "method": killed.stack.method,
        "seconds": round(killed.stack.seconds, 4),
        "bytes": len(killed.stack.text),
        "notes": list(killed.stack.notes),
    }
    assert killed.stack.method.startswith("py-spy")
    assert kill_of(killed).late <= budget


def test_the_library_servers_keep_torchs_behaviour_unless_asked(tmp_path: Path) -> None:
    from timer_core import FileTimerServer

    plain = FileTimerServer(str(tmp_path / "a"), "run")
    asked = FileTimerServer(str(tmp_path / "b"), "run", capture_stacks=True)
    assert plain.reaper.expiry.capturer is None
    assert asked.reaper.expiry.capturer is not None
    for server in (plain, asked):
        server.stop()


def test_a_planted_link_is_not_followed_and_the_worker_is_not_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from timer_core.diagnosis.stack_capture import faulthandler_path

    monkeypatch.setenv("TIMER_SERVICE_STACK_DIR", str(tmp_path))
    secret = tmp_path / "secret"
    secret.write_text("root:the-password-hash\n")
    worker = spawn_stuck("plain", stdout=subprocess.PIPE)  # never registered a handler
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"ready"
        planted = faulthandler_path(worker.pid, os.getuid())
        planted.parent.mkdir(parents=True)
        planted.symlink_to(secret)
        captured = StackCapturer(budget=2, use_py_spy=False).capture(
            identity_of(worker), dump_signal=signal.SIGUSR2
        )
        assert captured.method == "proc"
        assert "the-password-hash" not in captured.text
        time.sleep(0.2)
        assert worker.poll() is None  # SIGUSR2 would have killed it: it was never sent
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()  # type: ignore[union-attr]
