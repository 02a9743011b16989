"""Which collective hung, across nodes (issue 22, contract 10): the fleet's two node
services, ``node-a`` and ``node-b``, and its hub, three real ``timer-service`` processes
on one real PostgreSQL database (tests/e2e/test_fleet_end_to_end.py's fleet), and a
real two-node ``torchrun`` job (c10d rendezvous, 2 ranks a node, gloo; the job of
tests/e2e/test_which_collective_hung.py). Each node's ranks use torch's unmodified
``FileTimerClient`` on their own node's FIFO and run torch's worker server
(``worker_main()``) on a socket in their node's own directory.

One rank of node 1 skips the all_reduce of its third step (#4). Each node reads only
its own ranks' stacks and flight recorders; the incident's analysis is redone as the
other node's ranks join. The one incident holds the four ranks of both nodes, each
with its recorder, and names the skipping rank missing from #4, the only suspect, by
the collective rule, as torch's own analyzer does on the dumps the ranks gave while
the job hung; the hub and both nodes answer the same incident.

Needs root (the service reads another process's sockets), torch, torchrun and
PostgreSQL.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.app.service_process import free_port
from tests.e2e.test_fleet_end_to_end import (
    NODES,
    RANKS_PER_NODE,
    Fleet,
    fleet,  # noqa: F401 - a fixture of these tests
    get,
)
from tests.e2e.test_which_collective_hung import (
    PAIR,
    TORCHRUN,
    NodeOfJob,
    ended,
    hung_recorders,
    incident_of,
    sockets,  # noqa: F401 - a fixture of these tests
    torchrun,
)
from tests.second_user import SERVICE_AS_ROOT
from tests.timer_core.diagnosis.test_collectives_oracle import torchs_findings
from tests.timer_core.diagnosis.torch_worker_server import needs_torch
from tests.waiting import wait_until

__all__: list[str] = []

WORLD_SIZE = len(NODES) * RANKS_PER_NODE
# On node 1 (node-b), this local rank skips. Which global rank that is, the c10d
# rendezvous decides (it orders nodes as they join): the test reads it off the timers.
SKIP_LOCAL_RANK = 1

pytestmark = [
    pytest.mark.torch,
    needs_torch,
    *SERVICE_AS_ROOT,
    pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed (pip install torch)"),
]


def ranks_by_node(services: Fleet, job_id: str) -> dict[str, dict[int, int]]:
    """Each node's ranks of the job (global rank to local rank), from the timers they
    armed on their node's FIFO."""
    timers = get(services.hub, "/timers", job=job_id, limit=1000)["items"]
    return {
        name: {t["rank"]: t["local_rank"] for t in timers if t["node"] == name} for name in NODES
    }


def test_each_node_reads_its_own_ranks_and_the_incident_names_the_skipper_across_both(
    tmp_path: Path,
    fleet: Fleet,  # noqa: F811 - the imported fixture
    sockets: Path,  # noqa: F811 - the imported fixture
) -> None:
    job_id = f"nodes-{uuid.uuid4().hex[:8]}"
    endpoint = f"127.0.0.1:{free_port()}"
    with ExitStack() as started:
        jobs = []
        for node_rank, name in enumerate(NODES):
            workdir, own_sockets = tmp_path / f"job-{name}", sockets / name
            workdir.mkdir()
            own_sockets.mkdir(mode=0o700)
            node = NodeOfJob(
                job_id, endpoint, node_rank, len(NODES), RANKS_PER_NODE,
                SKIP_LOCAL_RANK if node_rank == 1 else None,
            )  # fmt: skip
            _, job = started.enter_context(
                torchrun(fleet.nodes[name], workdir, "skip", own_sockets, "worker_main", node)
            )
            jobs.append((job, workdir))

        def every_rank_armed() -> bool:
            return sum(map(len, ranks_by_node(fleet, job_id).values())) == WORLD_SIZE

        assert wait_until(every_rank_armed, 60), ranks_by_node(fleet, job_id)
        on_node = ranks_by_node(fleet, job_id)
        assert all(len(ranks) == RANKS_PER_NODE for ranks in on_node.values()), on_node
        [skipper] = [r for r, local in on_node["node-b"].items() if local == SKIP_LOCAL_RANK]
        # Read over each rank's own server while the job hangs, as the services do:
        # the skipper's default group stops at #3, the others' at #4; ranks 1 and 2
        # ran one all_reduce of the pair before.
        hung = {
            rank: {"0": 3 if rank == skipper else 4, **({"1": 1} if rank in PAIR["1"] else {})}
            for rank in range(WORLD_SIZE)
        }
        dumps = hung_recorders(fleet.hub, job_id, hung)
        for job, workdir in jobs:
            ended(job, workdir)
    incident = incident_of(fleet.hub, job_id, WORLD_SIZE)

    # One incident, of both nodes, seen alike by the hub and by each node.
    assert len(get(fleet.hub, "/incidents", job=job_id)["items"]) == 1
    for service in fleet.every():
        assert get(service, f"/incidents/{incident['id']}") == incident
    assert incident["nodes"] == list(NODES)
    ranks = sorted(incident["ranks"], key=lambda r: r["rank"])
    assert {(r["rank"], r["node"]) for r in ranks} == {
        (rank, name) for name in NODES for rank in on_node[name]
    }
    for rank in ranks:
        assert rank["method"] == rank["stack_method"] == "worker-server", rank
        assert rank["outcome"] == "killed", rank
        (group, *_) = rank["collectives"]
        assert (group["pg"], group["last_enqueued"]) == ("0", hung[rank["rank"]]["0"]), rank

    # The skipper never entered all_reduce #4, which the ranks of both nodes did: only
    # an analysis over both nodes' recorders says so.
    others = [r for r in range(WORLD_SIZE) if r != skipper]
    assert set(others) & set(on_node["node-a"]) and set(others) & set(on_node["node-b"])
    (finding,) = incident["collective_findings"]
    assert (finding["pg"], finding["seq"], finding["op"]) == ("0", 4, "all_reduce"), finding
    assert (finding["ranks"], finding["missing"], finding["mismatch"]) == (others, [skipper], None)
    assert (finding["sizes"], finding["dtypes"], finding["all_entered"]) == ([[8]], ["float32"], 3)
    assert incident["suspects"] == [skipper]
    assert incident["suspect_rules"] == {str(skipper): "collective"}
    summary = incident["summary"]
    assert summary.startswith(
        f"rank {skipper} never joined all_reduce #4 (default group, [8] float32); ranks "
    ), summary
    assert f"rank {skipper} stuck in save_checkpoint (train.py:" in summary, summary

    # torch's own analyzer, on the dumps the ranks' servers gave while the job hung.
    assert torchs_findings(dumps, PAIR) == {
        (f["pg"], f["seq"], tuple(f["missing"]), ()) for f in incident["collective_findings"]
    }
    print(f"summary: {summary}")
