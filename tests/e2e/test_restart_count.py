"""torchrun's TORCHELASTIC_RESTART_COUNT is a label like the rank (contract 8): the real
service reads it from a real worker's environment, whichever source armed the timer,
stores it, shows it, filters by it, keeps it across a restart, and shows it per rank of
the job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until
from tests.workers import SLEEPER

JOB = "elastic-7"


def torchrun_worker(
    rank: int, restart_count: str, sleepers: list[subprocess.Popen[bytes]], code: str = SLEEPER
) -> subprocess.Popen[bytes]:
    """A worker as torchrun's agent starts it: rank ``rank`` of 3, in the job's
    ``restart_count``-th incarnation."""
    environment = {
        "TORCHELASTIC_RUN_ID": JOB,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": "3",
        "TORCHELASTIC_RESTART_COUNT": restart_count,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **environment}
    )
    sleepers.append(process)
    return process


def arm(service: ServiceProcess, pid: int, **extra: Any) -> httpx.Response:
    body = {"pid": pid, "scope_id": "step", "expires_in": 600, **extra}
    return httpx.post(service.url + "/timers", json=body)


def timer_ids(service: ServiceProcess, **params: Any) -> set[int]:
    response = httpx.get(service.url + "/timers", params=params)
    assert response.status_code == 200, response.text
    return {timer["id"] for timer in response.json()["items"]}


def test_the_restart_count_comes_from_the_workers_environment_and_filters_the_timers(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    fifo = tmp_path / "timers.fifo"
    service = ServiceProcess(tmp_path, "--fifo", str(fifo)).start()
    try:
        first = torchrun_worker(0, "0", sleepers)
        # Torch's convention: a FIFO request says nothing of labels, the environment does.
        second = torchrun_worker(
            1,
            "2",
            sleepers,
            f"""
            import time
            import timer_core as timer
            timer.configure(timer.FileTimerClient({str(fifo)!r}))
            with timer.expires(after=600, scope="step"):
                time.sleep(600)
            """,
        )
        garbled = torchrun_worker(2, "-1", sleepers)
        by_http = arm(service, first.pid)
        assert by_http.status_code == 201, by_http.text
        assert by_http.json()["restart_count"] == 0
        assert wait_until(lambda: bool(timer_ids(service, pid=second.pid)), timeout=15)
        [from_fifo] = httpx.get(service.url + "/timers", params={"pid": second.pid}).json()["items"]
        assert (from_fifo["source"], from_fifo["rank"], from_fifo["restart_count"]) == (
            "fifo",
            1,
            2,
        )
        # Not a count: null, never an error (the environment is the worker's to write).
        unreadable = arm(service, garbled.pid)
        assert unreadable.status_code == 201 and unreadable.json()["restart_count"] is None
        # Given in the request, it overrides the environment; a bad one arms nothing.
        explicit = arm(service, garbled.pid, scope_id="explicit", restart_count=5)
        assert explicit.status_code == 201 and explicit.json()["restart_count"] == 5
        for bad in (-1, "1", True):
            refused = arm(service, first.pid, scope_id="bad", restart_count=bad)
            assert refused.status_code == 422 and "restart_count" in refused.text
        assert timer_ids(service, scope="bad") == set()

        assert timer_ids(service, restart_count=0) == {by_http.json()["id"]}
        assert timer_ids(service, restart_count=2) == {from_fifo["id"]}
        assert timer_ids(service, restart_count=5, job=JOB) == {explicit.json()["id"]}
        assert httpx.get(service.url + "/timers", params={"restart_count": -1}).status_code == 422

        job = httpx.get(f"{service.url}/jobs/{JOB}").json()
        assert {rank["rank"]: rank["restart_count"] for rank in job["ranks"]} == {0: 0, 1: 2, 2: 5}
        page = httpx.get(f"{service.url}/ui/jobs/{JOB}").text
        assert 'data-rank="1"' in page and 'data-restart-count="2"' in page
        assert "restart 2" in page

        # Re-armed after a restart with the label it was armed with.
        service.stop()
        service.start()
        assert timer_ids(service, state="active", restart_count=2) == {from_fifo["id"]}
        rearmed = httpx.get(f"{service.url}/timers/{from_fifo['id']}").json()
        assert (rearmed["state"], rearmed["restart_count"]) == ("active", 2)
    finally:
        service.stop()
