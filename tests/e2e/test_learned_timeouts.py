"""Learned timeouts in a real run (contract 12): a real worker times each step in
``expires(after="auto")`` through HttpTimerClient against the real service. The first
``--auto-min-samples`` steps get ``--auto-initial-timeout``; then a timeout learned from
the steps, near their real length; then a step that hangs is killed at that timeout,
long before the initial one would have fired. What is checked is computed, not timed:
each learned timeout is the rule's suggestion over the steps recorded before it, and
the kill is the expiry of that deadline (how long it took is bench/'s and the note's)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.hold_history import nearest_rank
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
                break
        else:
            pytest.fail(f"the worker ended before its hang: {worker.wait()}")
        # A bound on the test, not an assertion: the kill is checked below.
        returncode = worker.wait(timeout=INITIAL / 2)
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
    assert [t["state"] for t in steps] == ["released"] * STEPS + ["killed"]
    # Learned: max(floor, 3 x p99, 1.5 x max) of the steps recorded before it (all of
    # them, or those before a suggestion the service kept LEARNED_FOR_SECONDS), as the
    # recorded holds give it (the deadline, not the duration, is stored: to 10 ms).
    holds = [t["ended_at"] - t["acquired_at"] for t in steps[:STEPS]]
    for number in range(MIN_SAMPLES, STEPS + 1):
        suggestions = [suggestion(holds[:known]) for known in range(MIN_SAMPLES, number + 1)]
        assert any(abs(timeouts[number] - s) < 0.01 for s in suggestions), (number, timeouts)
    # The hang was killed at its learned deadline: it fell due (an incident, the job's
    # expiry, at its expiration_time, not the initial 60 s after it was armed), then
    # was killed.
    hang = steps[-1]
    history = events_of(service, hang["id"])
    assert [e["kind"] for e in history] == ["acquired", "incident", "killed"], history
    assert hang["expiration_time"] <= history[1]["at"] < hang["acquired_at"] + INITIAL
    print(f"learned timeouts {timeouts[MIN_SAMPLES:]}")
    stats = httpx.get(service.url + "/scopes", params={"job": JOB}).json()["items"]
    assert [(s["scope_id"], s["count"]) for s in stats] == [("train-step", STEPS)]
    # What GET /scopes suggests is what the last step was armed with (give or take the
    # moment the service read the clock: the deadline, not the duration, is stored).
    assert stats[0]["suggested_timeout"] == pytest.approx(timeouts[-1], abs=0.01)


def suggestion(holds: list[float]) -> float:
    """The rule (app.db.scope_stats.suggested_timeout) over ``holds``, nearest-rank p99."""
    return max(FLOOR, 3 * nearest_rank(holds, 99), 1.5 * max(holds))


def events_of(service: ServiceProcess, timer_id: int) -> list[dict[str, Any]]:
    page = httpx.get(service.url + "/events", params={"timer_id": timer_id, "limit": 100})
    items: list[dict[str, Any]] = page.json()["items"]
    return sorted(items, key=lambda e: e["id"])


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


def test_another_users_holds_teach_only_that_users_auto_timeouts(
    service: ServiceProcess, second_user: SecondUser
) -> None:
    # Another user's worker labels its timers with root's job id and scope, and
    # releases enough short holds to learn from: that user's own "auto" arming learns
    # from them, root's next "auto" arming of the same job and scope does not (initial).
    theirs = second_user.popen(["sleep", "300"])
    mine = subprocess.Popen(["sleep", "300"])
    target = service.url.replace("http://", "tcp://")
    labels = {"scope_id": "victim-step", "job_id": "victim"}
    try:
        for _ in range(MIN_SAMPLES + 1):
            body = {"pid": theirs.pid, "expires_in": 60, **labels}
            status, answer = ask_as(second_user, target, "POST", "/timers", body)
            assert status == 201, answer
            body = {"pid": theirs.pid, "scope_id": "victim-step"}
            status, answer = ask_as(second_user, target, "POST", "/timers/release", body)
            assert status == 200, answer
        body = {"pid": theirs.pid, "expires_in": "auto", **labels}
        status, learned = ask_as(second_user, target, "POST", "/timers", body)
        assert (status, learned["timeout_source"]) == (201, "learned"), learned
        assert learned["expiration_time"] - learned["acquired_at"] < INITIAL
        mine_auto = httpx.post(
            service.url + "/timers", json={"pid": mine.pid, "expires_in": "auto", **labels}
        ).json()
        assert mine_auto["timeout_source"] == "initial", mine_auto
        assert mine_auto["expiration_time"] - mine_auto["acquired_at"] == pytest.approx(
            INITIAL, abs=0.5
        )
        # The statistics and the what-if are the owner's too.
        scopes = httpx.get(service.url + "/scopes", params={"job": "victim"}).json()["items"]
        assert [(s["uid"], s["scope_id"], s["count"]) for s in scopes] == [
            (second_user.uid, "victim-step", MIN_SAMPLES + 1)
        ]
        root_only: dict[str, str | int] = {"job": "victim", "uid": os.geteuid()}
        assert httpx.get(service.url + "/scopes", params=root_only).json()["items"] == []
        whatif: dict[str, str | int] = {"scope": "victim-step", "timeout": 30, **root_only}
        assert httpx.get(service.url + "/scopes/whatif", params=whatif).json()["considered"] == 0
    finally:
        for worker in (theirs, mine):
            worker.kill()
            worker.wait()
