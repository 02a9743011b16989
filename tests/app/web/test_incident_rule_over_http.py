"""The suspect rule over HTTP, with no torch: hand-made workers of one job, armed with
``POST /timers`` and explicit labels. Three peers wait in the same place; one rank, the
minority, is stuck elsewhere. Its expiry opens the job's incident, which captures all
four (py-spy) and must name the minority rank, and only it, as the suspect:

- when the peers wait in a torch.distributed collective (a frame in a file named
  ``distributed_c10d.py``, as torch's is) and the minority does not;
- when nobody waits in a collective: then the smallest group is the suspect.

Labels that are wrong get 422 and arm nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.job_over_http import arm_rank, whole_incident
from tests.app.service_process import ServiceProcess
from timer_core.diagnosis.stack_capture import StackCapturer

JOB = "http-job-41"
MINORITY = 1
WORLD_SIZE = 4

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: py-spy attaches with ptrace")
needs_py_spy = pytest.mark.skipif(
    StackCapturer().py_spy is None, reason="py-spy is not installed (pip install py-spy)"
)

# Where the peers wait: a collective, in a file named as torch's is.
COLLECTIVE = """
import time


def all_reduce():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)  # waiting for the rank that never comes
"""
PEER = """
import sys

sys.path.insert(0, sys.argv[1])
from {module} import all_reduce


def train_step():
    all_reduce()


train_step()
"""
STUCK = """
import time


def load_batch():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)  # a dead data loader


def train_step():
    load_batch()


train_step()
"""


def start(script: Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker running ``script``, once it is in its loop."""
    process = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE)
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline() == b"ready\n"
    return process


@needs_root
@needs_py_spy
@pytest.mark.parametrize("peers_in", ["distributed_c10d", "shared_queue"])
def test_the_minority_rank_is_the_only_suspect(
    tmp_path: Path,
    service: ServiceProcess,
    sleepers: list[subprocess.Popen[bytes]],
    peers_in: str,
) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    (library / f"{peers_in}.py").write_text(COLLECTIVE)
    (tmp_path / "peer.py").write_text(PEER.format(module=peers_in))
    (tmp_path / "stuck.py").write_text(STUCK)
    workers: dict[int, subprocess.Popen[bytes]] = {}
    for rank in range(WORLD_SIZE):
        script = tmp_path / ("stuck.py" if rank == MINORITY else "peer.py")
        workers[rank] = start(script, str(library))
        sleepers.append(workers[rank])
    # The minority's step expires first; its peers' timers are still armed.
    for rank, worker in workers.items():
        arm_rank(service, worker.pid, JOB, rank, WORLD_SIZE, 1.0 if rank == MINORITY else 600.0)

    incident = whole_incident(service, JOB, WORLD_SIZE)
    captures = sorted(incident["ranks"], key=lambda c: c["rank"])
    assert [c["rank"] for c in captures] == list(range(WORLD_SIZE))
    assert {c["rank"]: c["pid"] for c in captures} == {r: w.pid for r, w in workers.items()}
    assert all((c["stack_method"] or "").startswith("py-spy") for c in captures), captures
    outcomes = {c["rank"]: c["outcome"] for c in captures}
    assert outcomes.pop(MINORITY) in {"expired", "killed"}
    assert set(outcomes.values()) == {"captured"}  # the peers were not expiring

    assert incident["suspects"] == [MINORITY]
    groups = incident["groups"]
    assert sorted(tuple(g["ranks"]) for g in groups) == [(0, 2, 3), (MINORITY,)]
    summary = incident["summary"]
    assert summary.startswith(f"rank {MINORITY} stuck in time.sleep (stuck.py:"), summary
    waiting = "wait in all_reduce" if peers_in == "distributed_c10d" else "in time.sleep"
    assert f"ranks 0, 2-3 {waiting}" in summary, summary
    # The peers are still alive: only the minority's timer expired.
    assert all(workers[rank].poll() is None for rank in (0, 2, 3))


@pytest.mark.parametrize(
    "labels",
    [
        {"job_id": JOB, "rank": -1, "world_size": 4},
        {"job_id": JOB, "rank": 4, "world_size": 4},
        {"job_id": JOB, "rank": 7, "world_size": 2},
        {"job_id": "j" * 257, "rank": 0, "world_size": 4},
        {"job_id": 42, "rank": 0, "world_size": 4},
        {"job_id": ["a"], "rank": 0},
        {"job_id": JOB, "rank": "1", "world_size": 4},
        {"job_id": JOB, "rank": 0, "world_size": 0},
    ],
)
def test_wrong_labels_get_422_and_arm_nothing(
    shared_service: ServiceProcess, sleeper: subprocess.Popen[bytes], labels: dict[str, Any]
) -> None:
    # One service for every case: each looks only at its own worker's timers.
    service = shared_service

    def timers_of_the_worker() -> list[dict[str, Any]]:
        answer = httpx.get(service.url + "/timers", params={"pid": sleeper.pid})
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    body = {"pid": sleeper.pid, "scope_id": "step", "expires_in": 600, **labels}
    answer = httpx.post(service.url + "/timers", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
    assert timers_of_the_worker() == []
    # The same request with right labels arms.
    right = {**body, "job_id": JOB, "rank": 0, "world_size": 4}
    assert httpx.post(service.url + "/timers", json=right).status_code == 201
    [armed] = timers_of_the_worker()
    assert (armed["job_id"], armed["rank"], armed["world_size"]) == (JOB, 0, 4)
