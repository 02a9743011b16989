"""Which collective hung? (issue 22, contract 10) Real ``torchrun`` (torch 2.13, gloo on
the CPU) with 4 ranks using torch's own, unmodified ``FileTimerClient`` on the real
service's FIFO. Each rank runs torch's worker server on a Unix socket of its own, in a
directory only its user may enter: started by torch's ``worker_main()`` from
``TORCH_WORKER_SERVER_SOCKET``, or by ``python -m timer_core.with_worker_server`` for
the script left as it is. Nothing is agreed with the service.

- **skip**: rank 1 skips the all_reduce of its third step, which the others enter (#4).
  The incident names rank 1 as missing from #4, and only rank 1, by the collective rule,
  as torch's own analyzer does on the very dumps the ranks' servers gave while the job
  hung; every rank's evidence is ``worker-server``, with its flight recorder.
- **subgroup**: rank 1 enters an all_reduce of ``new_group([1, 2])`` while the others
  enter the default group's: rank 1 is missing from the default group's and rank 2 from
  the pair's, and the summary says ranks 1 and 2 wait on each other across the groups.
- **no server**: the skip job without worker servers: py-spy takes every stack and the
  stack rule names rank 1, with no recorders and no collective findings.
- **hostile**: workers of a second user whose descriptors lead to another user's live
  worker server (a socket path swapped for a link to it, a connection to it) get no stack
  of that worker in the incident: theirs is py-spy's, and the swapped path's refusal
  (another pid's server) is noted on its kill.

Needs root (py-spy attaches with ptrace; the second user is made with useradd).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.app.job_over_http import whole_incident
from tests.app.service_process import ServiceProcess, free_port
from tests.e2e import torchrun_job
from tests.e2e.torchrun_job import TORCHRUN as TORCHRUN  # the across-nodes test's import
from tests.e2e.torchrun_job import (
    captures_stacks,
    get,
    job_env,
    kill_job,
    needs_torchrun,
    start_job,
)
from tests.second_user import SERVICE_AS_ROOT, SYSTEM_PYTHON, SecondUser
from tests.timer_core.diagnosis.test_collectives_oracle import torchs_findings
from tests.timer_core.diagnosis.test_worker_server_hostile import (
    hostile_dir,  # noqa: F401 - a fixture of these tests
    start_fake,
    victim,  # noqa: F401 - a fixture of these tests
)
from tests.timer_core.diagnosis.torch_worker_server import TorchWorker, needs_torch
from tests.waiting import wait_until
from timer_core.diagnosis.worker_server_capture import WorkerServerCapture, capture_worker_server

WORLD_SIZE = 4
SKIPPER = 1
# A step's timer: far longer than a tiny all_reduce takes on a busy 2-core machine,
# long enough for the test to read the hung ranks' recorders itself before the kill.
STEP_SECONDS = 5.0
# The subgroup every job makes, dist.new_group([1, 2]): torch names it "1".
PAIR = {"1": [1, 2]}

pytestmark = [
    pytest.mark.torch,
    needs_torch,
    *SERVICE_AS_ROOT,
    *captures_stacks,
    needs_torchrun,
]

# The worker torchrun runs: torch's own timer client and worker server, nothing of ours.
WORKER = """
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.elastic import timer
from torch.distributed.elastic.control_plane import worker_main

SCENARIO, STEP_SECONDS = sys.argv[1], float(sys.argv[2])
if "RANK_SOCKETS" in os.environ:  # each rank a socket of its own, in a 0700 directory
    os.environ["TORCH_WORKER_SERVER_SOCKET"] = os.path.join(
        os.environ["RANK_SOCKETS"], os.environ["LOCAL_RANK"] + ".sock"
    )


def save_checkpoint() -> None:
    time.sleep(600)


def train_step(number: int, rank: int, pair: dist.ProcessGroup) -> None:
    if number < 2:
        dist.all_reduce(torch.ones(8))
    elif SCENARIO == "subgroup" and rank == 1:
        dist.all_reduce(torch.ones(8), group=pair)  # the others are in the default group's
    elif SCENARIO == "skip" and os.environ["LOCAL_RANK"] == os.environ["SKIP_LOCAL_RANK"]:
        save_checkpoint()  # control flow diverged: this rank skips this step's all_reduce
    else:
        dist.all_reduce(torch.ones(8))


@worker_main()
def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=40))
    rank = dist.get_rank()
    pair = dist.new_group([1, 2])
    timer.configure(timer.FileTimerClient(os.environ["TIMER_FIFO"]))
    dist.all_reduce(torch.ones(8))  # gloo's first collectives connect: not timed
    if rank in (1, 2):
        dist.all_reduce(torch.ones(8), group=pair)
    for number in range(3):
        with timer.expires(after=STEP_SECONDS, scope="step"):
            train_step(number, rank, pair)
    time.sleep(600)  # not reached: the third step hangs


if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # A generous stack budget: the job without servers takes four py-spy --native dumps
    # of torch processes at once on a busy 2-core machine.
    workdir = tmp_path_factory.mktemp("service")
    running = ServiceProcess(
        workdir, "--fifo", str(workdir / "timers.fifo"), "--stack-budget", "10"
    ).start()
    yield running
    running.stop()


@pytest.fixture
def sockets() -> Iterator[Path]:
    """The ranks' socket directory: 0700, short enough for a Unix socket's name."""
    path = Path(tempfile.mkdtemp(prefix="ranks-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class NodeOfJob:
    """One node's torchrun in a job of several nodes: every node's torchrun names the
    job's id and rendezvous, and its own rank among the nodes."""

    job_id: str
    endpoint: str  # the c10d rendezvous, host:port
    node_rank: int
    nodes: int = 2
    ranks: int = 2  # on this node
    skip_local_rank: int | None = None  # on this node, in the "skip" scenario


@contextmanager
def torchrun(
    service: ServiceProcess,
    workdir: Path,
    scenario: str,
    sockets: Path,
    server: Literal["worker_main", "runner"] | None,
    node: NodeOfJob | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The 4-rank job (its id, its torchrun), killed whole on the way out; or, given
    ``node``, that node's part of the job, its ranks on ``service``'s FIFO. Its ranks
    run a worker server, with its socket in ``sockets``, started by torch's
    ``worker_main()`` or by ``-m timer_core.with_worker_server``, or none."""
    skip_local_rank: int | None
    if node is None:
        job_id, skip_local_rank = f"{scenario}-{uuid.uuid4().hex[:8]}", SKIPPER
        where = [f"--nproc-per-node={WORLD_SIZE}", f"--rdzv-endpoint=127.0.0.1:{free_port()}"]
    else:
        job_id, skip_local_rank = node.job_id, node.skip_local_rank
        where = [
            f"--nnodes={node.nodes}",
            f"--node-rank={node.node_rank}",
            f"--nproc-per-node={node.ranks}",
            f"--rdzv-endpoint={node.endpoint}",
        ]
    script = workdir / "train.py"
    script.write_text(WORKER)
    assert TORCHRUN is not None
    command = [
        TORCHRUN,
        *where,
        "--rdzv-backend=c10d",
        f"--rdzv-id={job_id}",
        *(["-m", "timer_core.with_worker_server"] if server == "runner" else []),
        str(script),
        scenario,
        str(STEP_SECONDS),
    ]
    env = job_env(service.workdir / "timers.fifo")
    # The runner's directories go where the test removes them: a killed rank leaves
    # its own behind.
    env = {key: value for key, value in env.items() if key != "XDG_RUNTIME_DIR"}
    env["TMPDIR"] = str(sockets)
    env.pop("TORCH_WORKER_SERVER_SOCKET", None)
    env["SKIP_LOCAL_RANK"] = "" if skip_local_rank is None else str(skip_local_rank)
    if server == "worker_main":
        env["RANK_SOCKETS"] = str(sockets)
    job = start_job(command, env, workdir / "torchrun.log")
    try:
        yield job_id, job
    finally:
        kill_job(job)


def ended(job: subprocess.Popen[bytes], workdir: Path) -> str:
    """torchrun's output, once the service's kills have ended it."""
    return torchrun_job.ended(job, workdir / "torchrun.log", 60)


def incident_of(service: ServiceProcess, job_id: str, ranks: int) -> dict[str, Any]:
    """The job's one incident, once it holds ``ranks`` ranks (0 to ``ranks`` - 1) and
    each one's kill."""
    return whole_incident(service, job_id, ranks, killed=range(ranks))


def hung_recorders(
    service: ServiceProcess, job_id: str, enqueued: dict[int, dict[str, int]]
) -> dict[int, dict[str, Any]]:
    """Each rank's ``fr_trace_json``, read over its own worker server (as the service
    does) once the job hangs in its third step: once each rank's last enqueued
    collective per process group is ``enqueued``'s."""
    recorders: dict[int, dict[str, Any]] = {}

    def last_enqueued(dump: dict[str, Any]) -> dict[str, int]:
        return {pg: int(s["last_enqueued_collective"]) for pg, s in dump["pg_status"].items()}

    def hung() -> bool:
        job = httpx.get(f"{service.url}/jobs/{job_id}")
        for rank in job.json()["ranks"] if job.status_code == 200 else []:
            capture = capture_worker_server(rank["pid"], 2.0)
            if isinstance(capture, WorkerServerCapture) and isinstance(
                capture.flight_recorder, bytes
            ):
                recorders[rank["rank"]] = json.loads(capture.flight_recorder)
        return {r: last_enqueued(d) for r, d in recorders.items()} == enqueued

    assert wait_until(hung, 30), {r: last_enqueued(d) for r, d in recorders.items()}
    return recorders


def test_the_rank_that_skipped_a_collective_is_named_by_its_sequence_number(
    tmp_path: Path, service: ServiceProcess, sockets: Path
) -> None:
    with torchrun(service, tmp_path, "skip", sockets, "worker_main") as (job_id, job):
        dumps = hung_recorders(
            service, job_id, {0: {"0": 4}, 1: {"0": 3, "1": 1}, 2: {"0": 4, "1": 1}, 3: {"0": 4}}
        )
        ended(job, tmp_path)
    incident = incident_of(service, job_id, WORLD_SIZE)

    ranks = sorted(incident["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    for rank in ranks:
        assert rank["method"] == rank["stack_method"] == "worker-server", rank
        assert rank["outcome"] == "killed", rank
        (group, *_) = rank["collectives"]
        assert group["pg"] == "0" and group["last_enqueued"] == (3 if rank["rank"] == 1 else 4)

    # rank 1 never entered all_reduce #4 of the default group, which the others did.
    (finding,) = incident["collective_findings"]
    assert (finding["pg"], finding["seq"], finding["op"]) == ("0", 4, "all_reduce"), finding
    assert (finding["ranks"], finding["missing"], finding["mismatch"]) == ([0, 2, 3], [1], None)
    assert (finding["sizes"], finding["dtypes"], finding["all_entered"]) == ([[8]], ["float32"], 3)
    assert incident["suspects"] == [SKIPPER]
    assert incident["suspect_rules"] == {str(SKIPPER): "collective"}
    summary = incident["summary"]
    assert summary.startswith(
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2-3 wait in it"
    ), summary
    assert "rank 1 stuck in save_checkpoint (train.py:" in summary, summary

    # torch's own analyzer, on the dumps the ranks' servers gave while the job hung.
    assert torchs_findings(dumps, PAIR) == {
        (f["pg"], f["seq"], tuple(f["missing"]), ()) for f in incident["collective_findings"]
    }
    print(f"summary: {summary}")


def test_ranks_waiting_in_two_groups_are_named_in_both(
    tmp_path: Path, service: ServiceProcess, sockets: Path
) -> None:
    # The ranks opt in with no line of their own: timer_core's runner starts the server.
    with torchrun(service, tmp_path, "subgroup", sockets, "runner") as (job_id, job):
        dumps = hung_recorders(
            service, job_id, {0: {"0": 4}, 1: {"0": 3, "1": 2}, 2: {"0": 4, "1": 1}, 3: {"0": 4}}
        )
        ended(job, tmp_path)
    incident = incident_of(service, job_id, WORLD_SIZE)

    assert {r["method"] for r in incident["ranks"]} == {"worker-server"}, incident["ranks"]
    findings = {f["pg"]: f for f in incident["collective_findings"]}
    assert sorted(findings) == ["0", "1"], findings
    default, pair = findings["0"], findings["1"]
    # rank 1 never joined the default group's #4: it waits in the pair's #2, where rank 2,
    # waiting in the default group's #4, never came.
    assert (default["seq"], default["ranks"], default["missing"]) == (4, [0, 2, 3], [1])
    assert (pair["seq"], pair["ranks"], pair["missing"]) == (2, [1], [2])
    assert incident["suspects"] == [1, 2]
    assert incident["suspect_rules"] == {"1": "collective", "2": "collective"}
    summary = incident["summary"]
    assert "ranks 1 and 2 wait on each other across default group and group 1" in summary
    # torch's own analyzer, told the pair's members (gloo's dumps do not list them).
    assert torchs_findings(dumps, PAIR) == {
        (f["pg"], f["seq"], tuple(f["missing"]), ()) for f in incident["collective_findings"]
    }
    print(f"summary: {summary}")


def test_without_worker_servers_py_spy_gives_the_stack_rules_answer(
    tmp_path: Path, service: ServiceProcess, sockets: Path
) -> None:
    with torchrun(service, tmp_path, "skip", sockets, None) as (job_id, job):
        ended(job, tmp_path)
    incident = incident_of(service, job_id, WORLD_SIZE)

    for rank in incident["ranks"]:
        assert rank["method"] == "py-spy" and rank["collectives"] is None, rank
    assert incident["collective_findings"] == []
    assert incident["suspects"] == [SKIPPER]
    assert incident["suspect_rules"] == {str(SKIPPER): "stack"}
    # py-spy names the call rank 1 is in (faulthandler, over a server, its function).
    summary = incident["summary"]
    assert summary.startswith("rank 1 stuck in time.sleep (train.py:"), summary
    assert "ranks 0, 2-3 wait in all_reduce (train.py:" in summary, summary


HOLDER = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.connect(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_worker_whose_sockets_lead_to_another_users_server_gets_no_stack_of_it(
    service: ServiceProcess,
    victim: tuple[TorchWorker, Path],  # noqa: F811 - the imported fixture
    second_user: SecondUser,
    hostile_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    """Two ranks of the second user: rank 0 listens on a socket whose path now leads to
    root's live torch worker server, rank 1 holds a connection to that server."""
    worker, path = victim
    job_id = f"hostile-{uuid.uuid4().hex[:8]}"
    swapped = start_fake(second_user, hostile_dir, "swap-to", str(path))
    holder = second_user.popen([SYSTEM_PYTHON, "-c", HOLDER, str(path)], stdout=subprocess.PIPE)
    hostile = [swapped, holder]
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        for rank, process in enumerate(hostile):
            body = {
                "pid": process.pid,
                "scope_id": "step",
                "expires_in": 0.5,
                "job_id": job_id,
                "rank": rank,
                "world_size": 2,
            }
            answer = httpx.post(service.url + "/timers", json=body)
            assert answer.status_code == 201, answer.text
        incident = incident_of(service, job_id, 2)
    finally:
        for process in hostile:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()

    by_rank = {rank["rank"]: rank for rank in incident["ranks"]}
    assert {r: c["pid"] for r, c in by_rank.items()} == {0: swapped.pid, 1: holder.pid}
    for rank in by_rank.values():
        assert rank["method"] == "py-spy" and rank["collectives"] is None, rank
        stack = httpx.get(
            f"{service.url}/incidents/{incident['id']}/captures/{rank['capture_id']}/stack"
        )
        assert stack.status_code == 200, stack.text
        assert f"Process {rank['pid']}:" in stack.text
        assert "stuck_in_a_step" not in stack.text  # root's worker's own function
    assert incident["collective_findings"] == []
    # The swapped path was tried and refused as root's server, not silently passed over.
    killed = get(service, "/events", kind="killed", limit=1000)["items"]
    (notes,) = [e["detail"]["stack"]["notes"] for e in killed if e["pid"] == swapped.pid]
    refused = f"served by pid {worker.pid} (uid 0), not {swapped.pid}"
    assert any(n.startswith("worker-server: not-its-own:") and refused in n for n in notes), notes
    frames = [line for group in incident["groups"] for line in group["frames"]]
    assert not any("stuck_in_a_step" in line for line in frames), frames
