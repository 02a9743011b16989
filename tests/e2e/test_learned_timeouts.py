"""Learned timeouts in a real run (contract 12): a real worker times each step in
``expires(after="auto")`` through HttpTimerClient against the real service. The first
``--auto-min-samples`` steps get ``--auto-initial-timeout``; then a timeout learned from
the steps, near their real length; then a step that hangs is killed at that timeout,
long before the initial one would have fired."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess, ask_as
from tests.second_user import SecondUser
from tests.waiting import wait_until

JOB = "learning-1"
MIN_SAMPLES = 5
INITIAL = 60.0
FLOOR = 0.5
STEP = 0.2
STEPS = 9

# Nine healthy steps of 0.2 s, then one that hangs; "step k" printed as each begins.
WORKER = """
import sys, time
import timer_core as timer

timer.configure(timer.HttpTimerClient(sys.argv[1]))
for step in range(int(sys.argv[2]) + 1):
    print("step", step, flush=True)
    with timer.expires(after="auto", scope="train-step"):
        time.sleep(float(sys.argv[3]) if step < int(sys.argv[2]) else 3600)
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(
        tmp_path,
        "--auto-min-samples",
        str(MIN_SAMPLES),
        "--auto-initial-timeout",
        str(INITIAL),
        "--auto-floor",
        str(FLOOR),
    ).start()
    yield running
    running.stop()


def test_an_auto_timer_learns_the_step_time_and_kills_a_hang_at_it(
    service: ServiceProcess,
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), service.url, str(STEPS), str(STEP)],
        env={**os.environ, "TORCHELASTIC_RUN_ID": JOB, "RANK": "0", "WORLD_SIZE": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            if line.strip() == f"step {STEPS}":
                hang_began = time.monotonic()
                break
        else:
            pytest.fail(f"the worker ended before its hang: {worker.wait()}")
        returncode = worker.wait(timeout=INITIAL / 2)
        killed_after = time.monotonic() - hang_began
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    assert returncode == -9  # SIGKILL, from the service

    def timers() -> list[dict[str, Any]]:
        page = httpx.get(service.url + "/timers", params={"job": JOB, "limit": 100}).json()
        return list(reversed(page["items"]))  # oldest first

    assert wait_until(lambda: len(timers()) == STEPS + 1 and timers()[-1]["state"] == "killed")
    steps = timers()
    sources = [t["timeout_source"] for t in steps]
    timeouts = [t["expiration_time"] - t["acquired_at"] for t in steps]
    assert sources == ["initial"] * MIN_SAMPLES + ["learned"] * (STEPS + 1 - MIN_SAMPLES)
    assert all(abs(seconds - INITIAL) < 0.5 for seconds in timeouts[:MIN_SAMPLES])
    # Learned: max(floor, 3 x p99, 1.5 x max) of 0.2 s steps, so about 0.6 s (more if
    # a step ran long on a busy machine), far below the initial 60 s.
    learned = timeouts[MIN_SAMPLES:]
    assert all(3 * STEP <= seconds < 10 for seconds in learned), learned
    assert [t["state"] for t in steps] == ["released"] * STEPS + ["killed"]
    # The hang was killed at the learned timeout, not the initial one.
    assert killed_after < INITIAL / 4, killed_after
    print(f"learned timeouts {learned}; the hang was killed after {killed_after:.2f} s")
    stats = httpx.get(service.url + "/scopes", params={"job": JOB}).json()["items"]
    assert [(s["scope_id"], s["count"]) for s in stats] == [("train-step", STEPS)]
    # What GET /scopes suggests is what the last step was armed with (give or take the
    # moment the service read the clock: the deadline, not the duration, is stored).
    assert stats[0]["suggested_timeout"] == pytest.approx(learned[-1], abs=0.01)


def test_another_user_may_not_arm_auto_for_roots_worker(
    service: ServiceProcess, second_user: SecondUser
) -> None:
    # Root's worker of a job: another user's "auto" request is refused (403) like any
    # arm of another user's process, and arms nothing; the worker lives on.
    worker = subprocess.Popen(
        ["sleep", "60"], env={"TORCHELASTIC_RUN_ID": JOB, "PATH": "/usr/bin:/bin"}
    )
    try:
        target = service.url.replace("http://", "tcp://")
        body = {"pid": worker.pid, "scope_id": "train-step", "expires_in": "auto"}
        status, answer = ask_as(second_user, target, "POST", "/timers", body)
        assert status == 403, answer
        assert f"uid {second_user.uid}" in answer["detail"]
        assert httpx.get(service.url + "/timers", params={"pid": worker.pid}).json()["items"] == []
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()
