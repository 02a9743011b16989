"""Stragglers in a real torchrun job (contract 12): 4 ranks (torch 2.13, gloo on the
CPU), each timing its compute in a scope of its own with torch's own FileTimerClient,
then all-reducing in a scope that includes the collective. With rank 3's compute 30 %
slower, rank 3 alone is flagged: one ``straggler`` event, its ``slowdown`` in
``GET /jobs/{id}``, its series of ``timer_rank_slowdown``, ``data-straggler`` on the job
page; the scope that includes the all-reduce flags no one (every rank waits for the
slowest there). With all ranks equal, no rank is flagged. What is asserted is which
rank is flagged, not how slow it measured (the figures are printed for the note).

The compute is a sleep: four busy ranks on a 2-core machine would slow each other."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.e2e.torchrun_job import get, job_command, job_env, needs_torchrun
from tests.waiting import wait_until

WORLD_SIZE = 4
WINDOW = 8
STEPS = 14
COMPUTE = 0.1

pytestmark = [pytest.mark.torch, needs_torchrun]

WORKER = """
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.elastic import timer

SLOW_RANK, COMPUTE, STEPS = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])

dist.init_process_group("gloo")
rank = dist.get_rank()
timer.configure(timer.FileTimerClient(os.environ["TIMER_FIFO"]))
dist.all_reduce(torch.ones(4))  # gloo's first collective connects: not timed
for _ in range(STEPS):
    with timer.expires(after=60, scope="step"):
        with timer.expires(after=60, scope="compute"):
            time.sleep(COMPUTE * (1.3 if rank == SLOW_RANK else 1.0))
        dist.all_reduce(torch.ones(4))
dist.destroy_process_group()
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(
        tmp_path, "--fifo", str(tmp_path / "timers.fifo"), "--straggler-window", str(WINDOW)
    ).start()
    yield running
    running.stop()


def run_job(tmp_path: Path, job_id: str, slow_rank: int) -> None:
    args = (str(slow_rank), str(COMPUTE), str(STEPS))
    command = job_command(tmp_path, WORKER, job_id, WORLD_SIZE, *args)
    env = job_env(tmp_path / "timers.fifo")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr


def released(service: ServiceProcess, job_id: str) -> int:
    return len(get(service, "/timers", job=job_id, state="released", limit=1000)["items"])


def test_the_slow_rank_alone_is_flagged(tmp_path: Path, service: ServiceProcess) -> None:
    run_job(tmp_path, "straggling", slow_rank=3)
    assert wait_until(lambda: released(service, "straggling") == 2 * WORLD_SIZE * STEPS)
    events = get(service, "/events", kind="straggler")["items"]
    assert [(e["scope_id"], e["detail"]["rank"]) for e in events] == [("compute", 3)]
    # Flagged because its slowdown reached the service's ratio, as the event records.
    assert events[0]["detail"]["slowdown"] >= events[0]["detail"]["ratio"] == 1.2
    timer = get(service, f"/timers/{events[0]['timer_id']}")
    assert (timer["job_id"], timer["rank"]) == ("straggling", 3)
    slowdowns = {r["rank"]: r["slowdown"] for r in get(service, "/jobs/straggling")["ranks"]}
    assert set(slowdowns) == {0, 1, 2, 3} and None not in slowdowns.values(), slowdowns
    print(f"slowdown of the flagged rank {events[0]['detail']['slowdown']}; now {slowdowns}")
    metrics = httpx.get(service.url + "/metrics").text
    flags = re.findall(
        r'^timer_rank_straggler\{job_id="straggling",rank="(\d)",uid="\d+"\} (\S+)$',
        metrics,
        re.M,
    )
    assert sorted(flags) == [("0", "0.0"), ("1", "0.0"), ("2", "0.0"), ("3", "1.0")], flags
    page = httpx.get(service.url + "/ui/jobs/straggling").text
    assert re.findall(r'data-rank="(\d)"[^>]*data-straggler="true"', page) == ["3"]


def test_equal_ranks_are_not_flagged(tmp_path: Path, service: ServiceProcess) -> None:
    run_job(tmp_path, "even", slow_rank=-1)
    assert wait_until(lambda: released(service, "even") == 2 * WORLD_SIZE * STEPS)
    assert get(service, "/events", kind="straggler")["items"] == []
    slowdowns = [r["slowdown"] for r in get(service, "/jobs/even")["ranks"]]
    assert len(slowdowns) == WORLD_SIZE and None not in slowdowns, slowdowns
    print(f"slowdowns of equal ranks {slowdowns}")
    metrics = httpx.get(service.url + "/metrics").text
    assert "timer_rank_slowdown{" not in metrics and "timer_rank_straggler{" not in metrics
    assert 'data-straggler="true"' not in httpx.get(service.url + "/ui/jobs/even").text
