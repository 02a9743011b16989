"""Dashboard readers against the real ``timer-service`` process: four clients polling
a scope-filtered view over 20k timers, in tight loops, do not stop a kill."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.sample_events import torch_line
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

TIMERS = 20_000
HOLDERS = 4


@pytest.fixture
def crowded(tmp_path: Path) -> Iterator[ServiceProcess]:
    fifo = tmp_path / "timers.fifo"
    service = ServiceProcess(
        tmp_path, "--fifo", str(fifo), "--max-timers-per-user", str(2 * TIMERS)
    ).start()
    yield service
    service.stop()


def test_four_readers_polling_a_scope_filter_over_20k_timers_do_not_stop_a_kill(
    crowded: ServiceProcess,
) -> None:
    service = crowded
    holders = [spawn_sleeper() for _ in range(HOLDERS)]
    victim = spawn_sleeper()
    stop = threading.Event()
    answers: collections.Counter[int] = collections.Counter()
    counted = threading.Lock()

    def poll() -> None:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            while not stop.is_set():
                code = client.get("/dashboard/state", params={"scope": "x"}).status_code
                with counted:
                    answers[code] += 1

    readers = [threading.Thread(target=poll) for _ in range(4)]
    try:
        # 20k timers, an hour long, written in torch's FIFO format.
        expiration = time.time() + 3600
        fifo = os.open(service.workdir / "timers.fifo", os.O_WRONLY)
        try:
            for index in range(TIMERS):
                scope = f"job-{index % 97}/step-{index}"
                os.write(fifo, torch_line(holders[index % HOLDERS].pid, scope, expiration))
        finally:
            os.close(fifo)
        assert wait_until(
            lambda: httpx.get(service.url + "/healthz").json()["active_timers"] >= TIMERS, 120
        )
        for thread in readers:
            thread.start()
        response = httpx.post(
            service.url + "/timers",
            json={"pid": victim.pid, "scope_id": "victim", "expires_in": 1},
            timeout=30,
        )
        # Armed either way: 202 when four readers over 20k timers on two cores keep the
        # commit waiting past a write's patience (contract 14), 201 otherwise.
        assert response.status_code in (201, 202), response.text
        assert_sigkilled(victim)
        body = response.json()
        timer_id = body["id"] if response.status_code == 201 else body["timer"]["id"]
        assert wait_until(
            lambda: httpx.get(f"{service.url}/timers/{timer_id}").json()["state"] == "killed",
            30,
        )
    finally:
        stop.set()
        for thread in readers:
            thread.join(60)
        for holder in holders:
            holder.kill()
            holder.wait()
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    # The readers were served (or told to come back), never failed.
    assert answers[200] > 0 and set(answers) <= {200, 429}, answers
