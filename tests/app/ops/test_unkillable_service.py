"""The real ``timer-service`` and a real worker SIGKILL cannot kill: held in ``D`` by a
FUSE filesystem that reads its request and never answers it (needs root and
/dev/fuse). The service says so in its event log (``GET /events?kind=unkillable``), in
``timer_unkillable_workers`` and on the timer's and its job's pages (the timer's, kept
live by its script, in real Chromium); and says it again when the filesystem is torn
down and the worker dies at last."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests.app.service_process import ServiceProcess, refused_start, scraped, wait_for_state
from tests.timer_core.diagnosis.stuck_fuse import worker_held_in_fuse
from tests.waiting import wait_until
from tests.workers import wait_dead

AFTER = 0.5
JOB = "unkillable-job"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    started = ServiceProcess(
        tmp_path_factory.mktemp("service"), "--unkillable-after", str(AFTER)
    ).start()
    yield started
    started.stop()


def unkillable_events(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(url + "/events", params={"kind": "unkillable"}).json()[
        "items"
    ]
    return sorted(items, key=lambda item: item["id"])


def marks(html: str, element: str) -> list[str]:
    """The ``data-unkillable`` values of the elements whose opening tag has ``element``."""
    return [
        found.group(1)
        for tag in re.findall(r"<[^>]*" + re.escape(element) + r"[^>]*>", html)
        if (found := re.search(r'data-unkillable="([^"]*)"', tag))
    ]


def test_a_worker_sigkill_cannot_kill_is_reported_shown_and_counted(
    service: ServiceProcess, tmp_path: Path, browser: Browser
) -> None:
    with worker_held_in_fuse(tmp_path) as worker:
        armed = httpx.post(
            service.url + "/timers",
            json={
                "pid": worker.pid,
                "scope_id": "step",
                "expires_in": 0.2,
                "job_id": JOB,
                "rank": 0,
                "world_size": 1,
            },
        )
        assert armed.status_code == 201, armed.text
        timer_id = armed.json()["id"]
        wait_for_state(service.url, worker.pid, "killed")
        assert wait_until(lambda: unkillable_events(service.url), 30), service.log()
        [stuck] = unkillable_events(service.url)
        assert stuck["timer_id"] == timer_id
        detail = stuck["detail"]
        assert (detail["state"], detail["wchan"]) == ("D", "request_wait_answer")
        assert detail["seconds"] >= AFTER and "exited" not in detail
        assert worker.poll() is None  # alive, past its SIGKILL
        assert scraped(service.url, "timer_unkillable_workers") == 1
        timer_page = httpx.get(f"{service.url}/ui/timers/{timer_id}").text
        assert marks(timer_page, 'id="timer"') == ["true"]
        assert "still alive" in timer_page and "request_wait_answer" in timer_page
        job_page = httpx.get(f"{service.url}/ui/jobs/{JOB}").text
        assert marks(job_page, f'data-timer-id="{timer_id}"') == ["true"]
        # The page stays open: its script must follow the worker's exit.
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{service.url}/ui/timers/{timer_id}")
        page.wait_for_selector('#timer[data-unkillable="true"]')
        assert "request_wait_answer" in page.inner_text("#unkillable")
    # The filesystem is gone: the worker dies of its SIGKILL at last.
    assert wait_dead(worker) == -signal.SIGKILL
    assert wait_until(lambda: len(unkillable_events(service.url)) == 2, 30), service.log()
    exited = unkillable_events(service.url)[1]
    assert exited["timer_id"] == timer_id and exited["detail"]["exited"] is True
    assert exited["detail"]["seconds"] >= detail["seconds"]
    assert scraped(service.url, "timer_unkillable_workers") == 0
    timer_page = httpx.get(f"{service.url}/ui/timers/{timer_id}").text
    assert marks(timer_page, 'id="timer"') == ["exited"]
    page.wait_for_selector('#timer[data-unkillable="exited"]', timeout=10_000)
    assert "then it exited" in page.inner_text("#unkillable")
    assert errors == []
    context.close()
    job_page = httpx.get(f"{service.url}/ui/jobs/{JOB}").text
    assert marks(job_page, f'data-timer-id="{timer_id}"') == ["exited"]
    # Its timer ended killed, and stays so: the events of after do not change it.
    timer = httpx.get(f"{service.url}/timers/{timer_id}").json()
    assert timer["state"] == "killed"
    assert "still alive" in service.log()


def test_a_worker_that_dies_of_its_sigkill_is_neither_reported_nor_counted(
    service: ServiceProcess,
) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        armed = httpx.post(
            service.url + "/timers", json={"pid": worker.pid, "scope_id": "s", "expires_in": 0.2}
        )
        assert armed.status_code == 201, armed.text
        assert wait_dead(worker) == -signal.SIGKILL
        timer_id = armed.json()["id"]
        # Past its look, and then some: the watch says nothing of it, nor its metric.
        wait_for_state(service.url, worker.pid, "killed")
        assert not wait_until(
            lambda: any(e["timer_id"] == timer_id for e in unkillable_events(service.url)),
            3 * AFTER,
        )
        assert scraped(service.url, "timer_unkillable_workers") == 0
        timer_page = httpx.get(f"{service.url}/ui/timers/{timer_id}").text
        assert marks(timer_page, 'id="timer"') == []
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_bad_unkillable_after_is_refused_saying_what_it_takes(tmp_path: Path, value: str) -> None:
    refused = refused_start(tmp_path, f"--unkillable-after={value}")
    assert refused.returncode == 2
    assert "--unkillable-after" in refused.stderr and "seconds" in refused.stderr
