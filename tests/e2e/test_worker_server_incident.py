"""An incident captured over torch's own worker servers (issue 22, contract 10), through
the real ``timer-service``: a 2-rank gloo job (torch 2.13, a FileStore), each rank
running ``_WorkerServer`` on a Unix socket it listens on itself, with nothing agreed
with the service. Rank 1 skips the second all_reduce, which rank 0 waits in; rank 1's
timer expires. Each rank's evidence is ``worker-server``, its flight recorder is in
``GET /incidents/{id}``, and the collective rule names rank 1 as missing from #2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.job_over_http import arm_rank, whole_incident
from tests.app.service_process import ServiceProcess
from tests.timer_core.diagnosis.torch_worker_server import needs_torch

JOB = "fr-job-7"
WORLD_SIZE = 2
SKIPPER = 1

RANK = r"""
import sys, time
from datetime import timedelta
import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _WorkerServer

rank, store_path, socket_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
store = dist.FileStore(store_path, 2)
dist.init_process_group("gloo", store=store, rank=rank, world_size=2,
                        timeout=timedelta(seconds=600))
dist.all_reduce(torch.ones(8))
server = _WorkerServer(socket_path)


def skip_the_next_step():
    print("ready", flush=True)
    time.sleep(600)


if rank == 1:
    skip_the_next_step()
print("ready", flush=True)
dist.all_reduce(torch.ones(8))  # #2: never completes, rank 1 does not come
"""


@pytest.fixture
def ranks(tmp_path: Path) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """The two ranks, each once its server is up (rank 0 about to wait in #2)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    started = {
        rank: subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(rank),
                str(tmp_path / "store"),
                str(tmp_path / f"{rank}.sock"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for rank in range(WORLD_SIZE)
    }
    try:
        for process in started.values():
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n"
        yield started
    finally:
        for process in started.values():
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


@needs_torch
def test_the_ranks_worker_servers_give_the_incident_its_collectives(
    service: ServiceProcess, ranks: dict[int, subprocess.Popen[bytes]]
) -> None:
    arm_rank(service, ranks[0].pid, JOB, 0, WORLD_SIZE, 600.0)
    arm_rank(service, ranks[SKIPPER].pid, JOB, SKIPPER, WORLD_SIZE, 1.0)

    incident = whole_incident(service, JOB, WORLD_SIZE, killed=[SKIPPER])
    by_rank = {rank["rank"]: rank for rank in incident["ranks"]}
    assert {r: c["pid"] for r, c in by_rank.items()} == {r: p.pid for r, p in ranks.items()}
    for rank in by_rank.values():
        assert rank["method"] == rank["stack_method"] == "worker-server", rank
        (group,) = rank["collectives"]
        assert group["pg"] == "0"
    assert by_rank[0]["collectives"][0]["last_enqueued"] == 2
    assert by_rank[SKIPPER]["collectives"][0]["last_enqueued"] == 1
    assert [(e["seq"], e["op"]) for e in by_rank[0]["collectives"][0]["entries"]] == [
        (1, "all_reduce"),
        (2, "all_reduce"),
    ]
    (finding,) = incident["collective_findings"]
    assert (finding["pg"], finding["seq"], finding["op"]) == ("0", 2, "all_reduce")
    assert (finding["ranks"], finding["missing"]) == ([0], [SKIPPER])
    assert incident["suspects"] == [SKIPPER]
    assert incident["suspect_rules"] == {str(SKIPPER): "collective"}
    # The stacks came over the servers too: rank 1's frame is its own function.
    skipper = next(g for g in incident["groups"] if SKIPPER in g["ranks"])
    assert skipper["frames"][0].startswith("skip_the_next_step ("), skipper
    assert by_rank[SKIPPER]["outcome"] == "killed"
    assert ranks[0].poll() is None  # rank 0's timer did not expire
