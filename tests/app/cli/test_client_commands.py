"""Every read command of the terminal client against the real service, in table form
and with ``--json``, the JSON checked equal to the REST answer fetched with httpx:
the lists with their filters, one timer, one job, the incident of a real job whose
stuck rank was killed (its summary, groups and frames), that rank's stack; 404s,
refused filters and a following page.

One service and one job for the module; the commands run as real processes, a few
side by side (``cli_many``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.app.cli.client_cli import cli_in_terminal, cli_many
from tests.app.job_over_http import arm_rank, rest, whole_incident
from tests.app.service_process import ServiceProcess
from timer_core.diagnosis.stack_capture import StackCapturer

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: py-spy attaches with ptrace"),
    pytest.mark.skipif(
        StackCapturer().py_spy is None, reason="py-spy is not installed (pip install py-spy)"
    ),
]

JOB = "cli-job-7"
STUCK_RANK = 1
WORLD_SIZE = 3
# The peers wait in a collective, in a file named as torch's is; the stuck rank does not.
COLLECTIVE = """
import time


def all_reduce():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""
PEER = """
import sys

sys.path.insert(0, sys.argv[1])
from distributed_c10d import all_reduce

all_reduce()
"""
STUCK = """
import time


def load_batch():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)


load_batch()
"""


class Job:
    def __init__(self, service: ServiceProcess, incident: dict[str, Any]) -> None:
        self.service = service
        self.url = service.url
        self.incident = incident
        timers = rest(service, "/timers", job=JOB)["items"]
        self.killed = next(t for t in timers if t["rank"] == STUCK_RANK)
        self.peer = next(t for t in timers if t["rank"] != STUCK_RANK)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    workdir = tmp_path_factory.mktemp("cli")
    (workdir / "distributed_c10d.py").write_text(COLLECTIVE)
    (workdir / "peer.py").write_text(PEER)
    (workdir / "stuck.py").write_text(STUCK)
    service = ServiceProcess(workdir).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(WORLD_SIZE):
            script = workdir / ("stuck.py" if rank == STUCK_RANK else "peer.py")
            worker = subprocess.Popen(
                [sys.executable, str(script), str(workdir)], stdout=subprocess.PIPE
            )
            workers.append(worker)
            assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
            arm_rank(service, worker.pid, JOB, rank, WORLD_SIZE, 1.0 if rank == STUCK_RANK else 600)
        incident = whole_incident(service, JOB, WORLD_SIZE, killed=[STUCK_RANK])
        yield Job(service, incident)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()
        service.stop()


@pytest.fixture(scope="module")
def runs(job: Job) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each command's run, in a table and with --json."""
    url = ["--url", job.url]
    killed, incident = str(job.killed["id"]), str(job.incident["id"])
    commands = {
        "timers": ["timers", "--job", JOB],
        "killed": ["timers", "--job", JOB, "--state", "killed"],
        "events": ["events", "--timer-id", killed],
        "jobs": ["jobs"],
        "job": ["job", JOB],
        "incidents": ["incidents", "--job", JOB],
        "incident": ["incident", incident],
        "nodes": ["nodes"],
        "timer": ["timer", killed],
    }
    every = {name: [*argv, *url] for name, argv in commands.items()}
    every |= {f"{name} --json": [*argv, *url, "--json"] for name, argv in commands.items()}
    every |= {
        "stack": ["stack", killed, *url],
        "peer stack": ["stack", str(job.peer["id"]), "--incident", incident, *url],
        "page": ["timers", "--job", JOB, "--limit", "1", *url],
        "no timer": ["timer", "999999999999999", *url],
        "no incident": ["incident", "999999999999999", *url],
        "no stack": ["stack", str(job.peer["id"]), *url],
        "no job": ["job", "no-such-job", *url],
        "no capture": ["stack", killed, "--incident", "999999999999999", *url],
        "bad rank": ["timers", "--rank", "-1", *url],
        "bad state": ["timers", "--state", "asleep", *url],
    }
    return cli_many(every)


def ok(runs: dict[str, subprocess.CompletedProcess[str]], name: str) -> str:
    done = runs[name]
    assert done.returncode == 0, (name, done.stderr)
    assert "\x1b[" not in done.stdout  # no colour into a pipe
    return done.stdout


def rows(table: str) -> list[list[str]]:
    """A table's lines split into cells (no cell here holds two spaces)."""
    return [line.split() for line in table.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("name", "path", "params"),
    [
        ("timers", "/timers", {"job": JOB}),
        ("killed", "/timers", {"job": JOB, "state": "killed"}),
        ("jobs", "/jobs", {}),
        ("job", f"/jobs/{JOB}", {}),
        ("incidents", "/incidents", {"job": JOB}),
        ("incident", "/incidents/{incident}", {}),
        ("timer", "/timers/{killed}", {}),
    ],
)
def test_json_is_the_rest_answer(
    job: Job,
    runs: dict[str, subprocess.CompletedProcess[str]],
    name: str,
    path: str,
    params: dict[str, Any],
) -> None:
    path = path.format(incident=job.incident["id"], killed=job.killed["id"])
    assert json.loads(ok(runs, f"{name} --json")) == rest(job.service, path, **params)


def test_events_json_is_the_rest_answer_and_the_table_shows_the_kill(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    expected = rest(job.service, "/events", timer_id=job.killed["id"])
    assert json.loads(ok(runs, "events --json")) == expected
    kinds = [event["kind"] for event in expected["items"]]
    assert "killed" in kinds and "acquired" in kinds
    header, *lines = rows(ok(runs, "events"))
    assert header[:4] == ["ID", "AT", "(UTC)", "KIND"]
    assert [line[0] for line in lines] == [str(event["id"]) for event in expected["items"]]
    assert [line[3] for line in lines] == kinds
    assert all(str(job.killed["id"]) in line for line in lines)


def test_nodes_json_is_the_rest_answer(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    # A node beats every few seconds: its last_seen is the one field that moves.
    after = rest(job.service, "/nodes")["items"]
    shown = json.loads(ok(runs, "nodes --json"))["items"]
    assert [{**node, "last_seen": 0} for node in shown] == [
        {**node, "last_seen": 0} for node in after
    ]
    assert all(s["last_seen"] <= a["last_seen"] for s, a in zip(shown, after, strict=True))
    [node] = rows(ok(runs, "nodes"))[1:]
    assert node[:3] == [after[0]["name"], "up", str(after[0]["active_timers"])]


def test_the_timers_table_shows_every_timer_whole(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    timers = rest(job.service, "/timers", job=JOB)["items"]
    header, *lines = rows(ok(runs, "timers"))
    assert header == ["ID", "STATE", "PID", "SCOPE", "JOB", "RANK", "NODE", "UNTIL", "(UTC)"]
    assert [line[:3] for line in lines] == [
        [str(t["id"]), t["state"], str(t["pid"])] for t in timers
    ]
    assert all(len(str(t["id"])) == 15 for t in timers)
    [killed] = rows(ok(runs, "killed"))[1:]
    assert killed[:2] == [str(job.killed["id"]), "killed"]
    assert JOB in killed and str(STUCK_RANK) in killed


def test_a_following_page_is_named_on_stderr(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    first = rest(job.service, "/timers", job=JOB, limit=1)
    assert len(rows(ok(runs, "page"))) == 2
    assert f"more: add --cursor {first['next']}" in runs["page"].stderr


def test_jobs_and_the_job_with_its_ranks(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    [listed] = [line for line in rows(ok(runs, "jobs"))[1:] if line[0] == JOB]
    assert listed[1:6] == ["0", str(WORLD_SIZE), str(WORLD_SIZE), str(WORLD_SIZE - 1), "1"]
    shown = ok(runs, "job")
    assert f"job            {JOB}" in shown
    ranks = {line[0]: line for line in rows(shown.split("\n\n", 1)[1])[1:]}
    assert sorted(ranks) == [str(rank) for rank in range(WORLD_SIZE)]
    assert ranks[str(STUCK_RANK)][4:6] == [str(job.killed["id"]), "killed"]
    assert f"timer-service incidents --job {JOB}" in runs["job"].stderr


def test_the_incident_shows_summary_suspect_groups_and_findings(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    incident = job.incident
    assert incident["suspects"] == [STUCK_RANK]
    shown = ok(runs, "incident")
    assert f"incident   {incident['id']}" in shown
    assert f"summary    {incident['summary']}" in shown
    assert incident["summary"].startswith(f"rank {STUCK_RANK} stuck in ")
    assert f"opened by  the expiry of timer {job.killed['id']} (rank {STUCK_RANK})" in shown
    assert f"suspects   rank {STUCK_RANK} (by the stack rule)" in shown
    ranks = shown.split("Ranks\n", 1)[1].split("\n\n", 1)[0]
    by_rank = {line[0]: line for line in rows(ranks)[1:]}
    assert by_rank[str(STUCK_RANK)][1:2] == ["yes"]
    assert "killed" in by_rank[str(STUCK_RANK)]
    assert all("captured" in by_rank[str(r)] for r in range(WORLD_SIZE) if r != STUCK_RANK)
    for group in incident["groups"]:
        marked = " (suspect)" if STUCK_RANK in group["ranks"] else ""
        ranks_shown = {(0, 2): "0, 2", (STUCK_RANK,): str(STUCK_RANK)}[tuple(group["ranks"])]
        block = f"group {group['group']}: ranks {ranks_shown}{marked}\n" + "".join(
            f"    {frame}\n" for frame in group["frames"]
        )
        assert block in shown, (block, shown)
    assert any("load_batch" in frame for group in incident["groups"] for frame in group["frames"])
    assert "Collective findings\nnone" in shown  # no flight recorder without torch
    assert json.loads(ok(runs, "incidents --json"))["items"][0]["id"] == incident["id"]
    [listed] = rows(ok(runs, "incidents"))[1:]
    assert listed[:2] == [str(incident["id"]), JOB]


def test_the_stack_is_printed_as_the_service_keeps_it(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    answer = httpx.get(f"{job.url}/timers/{job.killed['id']}/stack")
    assert answer.status_code == 200
    assert ok(runs, "stack").rstrip("\n") == answer.text.rstrip("\n")
    assert "load_batch" in answer.text
    assert f"captured by {answer.headers['x-stack-method']}" in runs["stack"].stderr


def test_a_ranks_stack_as_the_incident_captured_it(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    [rank] = [r for r in job.incident["ranks"] if r["timer_id"] == job.peer["id"]]
    path = f"/incidents/{job.incident['id']}/captures/{rank['capture_id']}/stack"
    answer = httpx.get(job.url + path)
    assert answer.status_code == 200
    assert "all_reduce" in answer.text  # a peer, alive, waiting in the collective
    assert ok(runs, "peer stack").rstrip("\n") == answer.text.rstrip("\n")
    hint = f"a rank's stack: timer-service stack TIMER --incident {job.incident['id']}"
    assert hint in ok(runs, "incident")


def test_the_timer_shows_its_fields_and_where_its_stack_is(
    job: Job, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    shown = ok(runs, "timer")
    fields = {line[:12].strip(): line[12:] for line in shown.splitlines()}
    assert fields["id"] == str(job.killed["id"])
    assert fields["state"] == "killed"
    assert fields["rank"] == f"{STUCK_RANK} of {WORLD_SIZE}"
    assert fields["job"] == JOB
    assert f"timer-service stack {job.killed['id']}" in runs["timer"].stderr


@pytest.mark.parametrize(
    ("name", "code", "said"),
    [
        ("no timer", 1, "404 Not Found: no timer 999999999999999"),
        ("no incident", 1, "no incident 999999999999999"),
        ("no stack", 1, "no stack was captured for timer"),
        ("no job", 1, "no job 'no-such-job'"),
        ("no capture", 1, "incident 999999999999999"),
        ("bad rank", 2, "422 Unprocessable Entity: rank: Input should be greater than"),
        ("bad state", 2, "invalid choice: 'asleep'"),
    ],
)
def test_errors_are_one_line_and_an_exit_code(
    runs: dict[str, subprocess.CompletedProcess[str]], name: str, code: int, said: str
) -> None:
    done = runs[name]
    assert done.returncode == code, done.stderr
    assert said in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_on_a_terminal_the_table_fits_its_width_in_colour_unless_no_color(job: Job) -> None:
    status, shown = cli_in_terminal("timers", "--job", JOB, "--url", job.url, columns=90)
    assert status == 0
    assert "\x1b[" in shown  # colour, on a terminal
    plain = _without_escapes(shown)
    assert max(len(line) for line in plain.splitlines()) <= 90
    for timer in rest(job.service, "/timers", job=JOB)["items"]:
        # Whole, however narrow: the id, and the state beside it.
        assert f"{timer['id']}  {timer['state']} " in plain
    status, shown = cli_in_terminal(
        "timers", "--job", JOB, "--url", job.url, columns=90, env={"NO_COLOR": "1"}
    )
    assert status == 0
    assert "\x1b[3" not in shown and "\x1b[1;31m" not in shown  # no colours


def _without_escapes(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
