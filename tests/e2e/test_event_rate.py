"""A user's share of the disk, against the real service running as root: a second user
flooding arm + release over HTTP (issue 20: four connections grew the database by
653 MB in 12 s) gets 429 with a Retry-After past its rate, counted, and written as a
refused event once a second, not once a request; root's requests meanwhile still get
201, and root's victim is killed within its budget."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess, scraped
from tests.second_user import SERVICE_AS_ROOT, SYSTEM_PYTHON, SecondUser, readable_copy
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

pytestmark = SERVICE_AS_ROOT

FLOOD = Path(__file__).parents[1] / "app" / "second_user_flood.py"
RATE = 20  # arms a second, after a burst of ten seconds' worth
BURST = 10 * RATE
ROOTS_CYCLES = 5
STACK_BUDGET = 2.0  # the service's default


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path, "--max-events-per-user-per-second", str(RATE)).start()
    yield running
    running.stop()


def items(service: ServiceProcess, path: str, **params: Any) -> list[dict[str, Any]]:
    answer = httpx.get(service.url + path, params={"limit": 1000, **params})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def rate_refusals(service: ServiceProcess) -> float | None:
    return scraped(service.url, "timer_refusals_total", reason="rate")


def test_a_flood_of_arms_gets_429_past_its_rate_while_roots_timers_are_armed_and_killed(
    service: ServiceProcess,
    second_user: SecondUser,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    worker = second_user.sleeper()
    roots_worker, victim = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([worker, roots_worker, victim])
    target = service.url.replace("http://", "tcp://")
    flood = second_user.popen(
        # A copy the second user can read: it may not reach the checkout.
        [SYSTEM_PYTHON, str(readable_copy(FLOOD)), target, str(worker.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    # Root's own work, once the flood is over its rate: every arm is taken, and its
    # victim dies on time.
    assert wait_until(lambda: (rate_refusals(service) or 0) > 0)
    armed = httpx.post(
        service.url + "/timers", json={"pid": victim.pid, "scope_id": "hang", "expires_in": 1.0}
    )
    assert armed.status_code == 201, armed.text
    roots_statuses = []
    for number in range(ROOTS_CYCLES):
        body = {"pid": roots_worker.pid, "scope_id": f"step-{number}", "expires_in": 60}
        roots_statuses.append(httpx.post(service.url + "/timers", json=body).status_code)
        release = {"pid": roots_worker.pid, "scope_id": f"step-{number}"}
        roots_statuses.append(httpx.post(service.url + "/timers/release", json=release).status_code)
    assert_sigkilled(victim)
    assert flood.poll() is None  # all of it while the flood ran
    out, _ = flood.communicate(timeout=30)  # closes its input: it stops
    found = json.loads(out)

    assert roots_statuses == [201, 200] * ROOTS_CYCLES
    killed = items(service, "/events", kind="killed", timer_id=armed.json()["id"])
    assert len(killed) == 1 and killed[0]["detail"]["latency"] < STACK_BUDGET + 1.0

    arms = {int(status): count for status, count in found["arms"].items()}
    assert set(arms) == {201, 429}, found
    # The burst, then the rate (a second of slack for the flood's own clock).
    assert arms[201] <= BURST + RATE * (found["seconds"] + 1), found
    assert found["retry_after"] == arms[429]
    assert "--max-events-per-user-per-second" in found["detail"]
    assert rate_refusals(service) == arms[429]
    # What reached the disk: the timers taken, and a refusal a second, not one a request.
    assert len(items(service, "/timers", pid=worker.pid)) == arms[201]
    refused = [e for e in items(service, "/events", kind="refused") if e["pid"] == worker.pid]
    assert 1 <= len(refused) <= found["seconds"] + 2
