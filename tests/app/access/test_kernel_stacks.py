"""A worker's kernel stack (``/proc/PID/stack``, which the kernel shows to root alone)
is served by the root service only to root and its own uid: the worker's owner, a
real second user, reads the rest of its ``proc`` report with the kernel stack left out
and a sentence saying why, from the timer's stack and from its incident capture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.access.kernel_stacks import HIDDEN_BECAUSE
from tests.app.service_process import ServiceProcess, ask_as, wait_for_state
from tests.second_user import SERVICE_AS_ROOT, SecondUser
from tests.waiting import wait_until
from tests.workers import assert_sigkilled

pytestmark = SERVICE_AS_ROOT

KERNEL_FRAME = "[<0>]"  # how /proc/PID/stack prints each frame


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    # No py-spy: the stack is the /proc report, kernel stack included.
    service = ServiceProcess(tmp_path, env={"TIMER_SERVICE_STACK_PY_SPY": "false"}).start()
    yield service
    service.stop()


def incident_capture(url: str, job: str) -> tuple[int, int]:
    def found() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = httpx.get(url + "/incidents", params={"job": job}).json()[
            "items"
        ]
        return items

    assert wait_until(lambda: bool(found()), 30)
    [incident] = found()
    [rank] = incident["ranks"]
    return incident["id"], rank["capture_id"]


def test_the_workers_owner_reads_its_proc_report_without_the_kernel_stack(
    service: ServiceProcess, second_user: SecondUser
) -> None:
    worker = second_user.sleeper()
    try:
        assert wait_until(lambda: second_user.run(["kill", "-0", str(worker.pid)]).returncode == 0)
        body = {
            "pid": worker.pid,
            "scope_id": "hung",
            "expires_in": 0.3,
            "job_id": "kernel-job",
            "rank": 0,
            "world_size": 1,
        }
        armed = httpx.post(service.url + "/timers", json=body)
        assert armed.status_code == 201, armed.text
        assert_sigkilled(worker)
    finally:
        worker.kill()
        worker.wait()
    timer = wait_for_state(service.url, worker.pid, "killed")
    target = f"tcp://127.0.0.1:{service.port}"
    incident_id, capture_id = incident_capture(service.url, "kernel-job")
    paths = [
        f"/timers/{timer['id']}/stack",
        f"/incidents/{incident_id}/captures/{capture_id}/stack",
    ]
    for path in paths:
        as_root = httpx.get(service.url + path)
        assert as_root.status_code == 200, as_root.text
        assert as_root.headers["x-stack-method"] == "proc"
        assert as_root.headers["x-stack-kernel"] == "shown"
        assert KERNEL_FRAME in as_root.text, as_root.text  # root reads /proc/PID/stack

        status, text = ask_as(second_user, target, "GET", path)
        assert status == 200, text
        assert KERNEL_FRAME not in text
        assert HIDDEN_BECAUSE in text
        assert f"/proc/{worker.pid}/status" in text  # the rest of the report is its own
    # Every other page and answer that tells of this timer or its incident carries no
    # stack text at all: the two routes above are the only way to a kernel stack.
    pages = [
        "/",
        "/dashboard/state",
        f"/dashboard/timers/{timer['id']}",
        f"/ui/timers/{timer['id']}",
        f"/timers/{timer['id']}",
        "/events?limit=200",
        f"/incidents/{incident_id}",
        f"/ui/incidents/{incident_id}",
        "/ui/jobs/kernel-job",
    ]
    for path in pages:
        status, answer = ask_as(second_user, target, "GET", path)
        assert status == 200, (path, answer)
        assert KERNEL_FRAME not in str(answer), path
