"""Which rank hung? Real ``torchrun`` (torch 2.13, gloo on the CPU) with 4 ranks using
torch's own, unmodified ``FileTimerClient`` on the real service's FIFO. Every rank loops
``with expires(after=...)`` around a step ending in ``dist.all_reduce``; rank 2 sleeps
inside one step, so the other three block in the all_reduce waiting for it.

The service must label all 4 ranks from their environment, open one incident for the
job with the stacks of all 4 taken before it signals any of them, and name rank 2,
and only rank 2, as the suspect: the others wait in all_reduce.

Needs root (py-spy attaches with ptrace) and the venv's torchrun.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.job_over_http import whole_incident
from tests.app.service_process import ServiceProcess
from tests.e2e.torchrun_job import (
    captures_stacks,
    ended,
    get,
    job_command,
    job_env,
    needs_torchrun,
    start_job,
)

STUCK_RANK = 2
WORLD_SIZE = 4
# A step's timer: far longer than a tiny all_reduce takes on a busy 2-core machine,
# short enough to keep the test quick.
STEP_SECONDS = 4.0

pytestmark = [pytest.mark.torch, *captures_stacks, needs_torchrun]

# The worker torchrun runs: torch's own timer client, nothing of ours.
WORKER = """
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.elastic import timer

STUCK_RANK, STEP_SECONDS = int(sys.argv[1]), float(sys.argv[2])


def step(number: int, rank: int) -> None:
    if rank == STUCK_RANK and number == 2:
        time.sleep(600)  # the hang: a dead data loader, a lock, a slow disk...
    dist.all_reduce(torch.ones(4))


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    timer.configure(timer.FileTimerClient(os.environ["TIMER_FIFO"]))
    dist.all_reduce(torch.ones(4))  # gloo's first collective connects: not timed
    for number in range(3):
        with timer.expires(after=STEP_SECONDS, scope="step"):
            step(number, rank)
    time.sleep(600)  # not reached: rank 2 never finishes step 2


if __name__ == "__main__":
    main()
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    # A generous stack budget: four py-spy --native dumps of torch processes at once
    # on a busy 2-core machine.
    running = ServiceProcess(
        tmp_path, "--fifo", str(tmp_path / "timers.fifo"), "--stack-budget", "10"
    ).start()
    yield running
    running.stop()


def torchrun(tmp_path: Path, job_id: str) -> subprocess.Popen[bytes]:
    command = job_command(tmp_path, WORKER, job_id, WORLD_SIZE, str(STUCK_RANK), str(STEP_SECONDS))
    env = job_env(tmp_path / "timers.fifo")
    return start_job(command, env, tmp_path / "torchrun.log")


def test_the_incident_names_the_rank_that_hung(tmp_path: Path, service: ServiceProcess) -> None:
    job_id = f"which-rank-{uuid.uuid4().hex[:8]}"
    # torchrun ends once the service has killed its ranks.
    output = ended(torchrun(tmp_path, job_id), tmp_path / "torchrun.log", 90)

    # Every rank's step timers, labelled from the workers' environment.
    timers = get(service, "/timers", job=job_id, limit=1000)["items"]
    assert timers, output
    assert {t["source"] for t in timers} == {"fifo"}
    assert {t["rank"] for t in timers} == {0, 1, 2, 3}
    assert all(t["local_rank"] == t["rank"] and t["world_size"] == WORLD_SIZE for t in timers)
    assert {t["scope_id"] for t in timers} == {"step"}
    job = get(service, f"/jobs/{job_id}")
    assert (job["job_id"], job["world_size"], job["ranks_seen"]) == (job_id, WORLD_SIZE, 4)
    pid_of = {r["rank"]: r["pid"] for r in job["ranks"]}
    assert sorted(pid_of) == [0, 1, 2, 3] and len(set(pid_of.values())) == WORLD_SIZE

    # One incident, holding all 4 ranks, once the recorder has written it whole.
    incident = whole_incident(service, job_id, 4)
    assert job_id in [j["job_id"] for j in get(service, "/jobs")["items"]]
    assert get(service, f"/jobs/{job_id}")["incidents"] == 1
    ranks = sorted(incident["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    assert {r["rank"]: r["pid"] for r in ranks} == pid_of
    for rank in ranks:
        assert (rank["stack_method"] or "").startswith("py-spy"), rank
        path = f"/incidents/{incident['id']}/captures/{rank['capture_id']}/stack"
        stack = httpx.get(service.url + path)
        assert stack.status_code == 200 and f"Process {rank['pid']}:" in stack.text

    # Every stack was taken before the service signalled any rank of the job: the
    # incident event (published once all were in) comes first.
    timer_ids = {t["id"] for t in timers}
    events = [
        event
        for kind in ("incident", "killed", "kill_failed", "escalated")
        for event in get(service, "/events", kind=kind, limit=1000)["items"]
        if event["timer_id"] in timer_ids
    ]
    events.sort(key=lambda event: event["id"])
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "incident" and kinds.count("incident") == 1, kinds
    killed = [e for e in events if e["kind"] == "killed"]
    assert killed, kinds
    assert all(e["at"] >= incident["opened_at"] == events[0]["at"] for e in killed), events

    # Rank 2 alone is the suspect; the others wait in all_reduce.
    assert incident["suspects"] == [STUCK_RANK]
    groups = incident["groups"]
    assert sorted(tuple(g["ranks"]) for g in groups) == [(0, 1, 3), (STUCK_RANK,)]
    summary = incident["summary"]
    assert summary.startswith(f"rank {STUCK_RANK} stuck in time.sleep (train.py:"), summary
    assert "ranks 0-1, 3 wait in all_reduce" in summary, summary
    print(f"summary: {summary}")
