"""A rank that stopped itself is the suspect, not the ranks waiting for it (issue 22).

Four real processes of one "job", labelled the way torchrun labels its workers (the
service reads TORCHELASTIC_RUN_ID, RANK, LOCAL_RANK and WORLD_SIZE from their
environment). Each arms its step's timer over the real service's HTTP API and enters
its step: rank 2 stops itself there (SIGSTOP, as a debugger or a stray ``kill -STOP``
would), and the others block reading a pipe, waiting for a peer that never writes.

py-spy cannot read a stopped process, so rank 2 has no stack. The incident must still
name rank 2, and only rank 2, by what ``/proc`` says of it (its state and wait channel,
evidence ``proc``), and name the others by their own code, not the standard library's.

Needs root (py-spy attaches with ptrace).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until
from timer_core.diagnosis.stack_capture import StackCapturer

STOPPED_RANK = 2
WORLD_SIZE = 4
STEP_SECONDS = 2.0

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: py-spy attaches with ptrace"),
    pytest.mark.skipif(
        StackCapturer().py_spy is None, reason="py-spy is not installed (pip install py-spy)"
    ),
]

# Standard library only: the worker arms its own timer, then runs its step.
WORKER = """
import json
import os
import signal
import sys
import urllib.request


def arm(url: str, seconds: float) -> None:
    body = {"pid": os.getpid(), "scope_id": "step", "expires_in": seconds}
    request = urllib.request.Request(
        url + "/timers", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).read()


def wait_for_peers() -> None:
    readable, _ = os.pipe()
    os.read(readable, 1)  # a peer's message that never comes


def step(rank: int) -> None:
    if rank == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGSTOP)  # the hang: frozen inside its step
    wait_for_peers()


arm(sys.argv[1], float(sys.argv[2]))
print("armed", flush=True)
step(int(os.environ["RANK"]))
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path, "--stack-budget", "5").start()
    yield running
    running.stop()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()  # SIGKILL ends a stopped process too
        process.wait()


def get(service: ServiceProcess, path: str, **params: str | int) -> Any:
    answer = httpx.get(service.url + path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_rank_that_stopped_itself_is_the_only_suspect(
    tmp_path: Path, service: ServiceProcess, workers: list[subprocess.Popen[bytes]]
) -> None:
    job_id = f"stopped-rank-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    for rank in range(WORLD_SIZE):
        labels = {
            "TORCHELASTIC_RUN_ID": job_id,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
        }
        argv = [sys.executable, str(script), service.url, str(STEP_SECONDS), str(STOPPED_RANK)]
        workers.append(subprocess.Popen(argv, env={**os.environ, **labels}))
    stopped = workers[STOPPED_RANK]
    assert wait_until(lambda: state_of(stopped.pid) == "T", 10), "rank 2 never stopped"
    wchan = Path(f"/proc/{stopped.pid}/wchan").read_text().strip()

    def incident() -> dict[str, Any] | None:
        listed = get(service, "/incidents", job=job_id)["items"]
        if not listed:
            return None
        found: dict[str, Any] = get(service, f"/incidents/{listed[0]['id']}")
        return found if len(found["ranks"]) == WORLD_SIZE else None

    assert wait_until(lambda: incident() is not None, 15), service.log()
    found = incident()
    assert found is not None
    print(f"summary: {found['summary']}")

    ranks = {rank["rank"]: rank for rank in found["ranks"]}
    # On a failure, how rank 2 was captured, the notes on the way, and the stack's head.
    captured = ranks[STOPPED_RANK]
    stack = httpx.get(
        f"{service.url}/incidents/{found['id']}/captures/{captured['capture_id']}/stack"
    ).text[:600]
    assert found["suspects"] == [STOPPED_RANK], (found["summary"], captured, stack)
    assert {r: ranks[r]["pid"] for r in ranks} == {r: w.pid for r, w in enumerate(workers)}
    assert ranks[STOPPED_RANK]["method"] == "proc", ranks[STOPPED_RANK]
    assert ranks[STOPPED_RANK]["group"] is None
    assert {ranks[r]["method"] for r in ranks if r != STOPPED_RANK} == {"py-spy"}, ranks
    assert [g["ranks"] for g in found["groups"]] == [[0, 1, 3]]
    summary = found["summary"]
    assert "\n" not in summary
    assert summary.startswith(f"rank {STOPPED_RANK} stopped (T, wchan {wchan}), no stack; ")
    waiting = "    os.read(readable, 1)  # a peer's message that never comes"
    line = WORKER.splitlines().index(waiting)
    assert summary.endswith(f"ranks 0-1, 3 in wait_for_peers (worker.py:{line + 1})"), summary

    # The page says how each rank's evidence was taken, the stopped rank marked.
    page = httpx.get(f"{service.url}/ui/incidents/{found['id']}").text
    assert 'data-method="proc">evidence: proc<' in page
    assert page.count('data-method="py-spy"') == WORLD_SIZE - 1
    assert f'data-rank="{STOPPED_RANK}" data-state=' in page
    cell = page.split(f'data-rank="{STOPPED_RANK}"', 1)[1].split("</li>", 1)[0]
    assert 'data-suspect="true"' in cell
    assert stopped.poll() is not None or wait_until(lambda: stopped.poll() is not None, 10)
    assert stopped.returncode == -signal.SIGKILL
