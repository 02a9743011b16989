"""The real ``timer-service serve`` process, real workers, real kills."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import ServiceProcess, wait_for_state
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, wait_dead


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path, "--fifo", str(tmp_path / "timers.fifo")).start()
    yield running
    running.stop()


def worker(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)])


def test_stuck_worker_using_http_client_is_killed_and_listed(service: ServiceProcess) -> None:
    stuck = worker(f"""
        import time
        import timer_core as timer
        timer.configure(timer.HttpTimerClient({service.url!r}))
        with timer.expires(after=0.5, scope="stuck-step"):
            time.sleep(60)
    """)
    assert_sigkilled(stuck, 30)
    timer = wait_for_state(service.url, stuck.pid, "killed")
    assert timer["scope_id"] == "stuck-step" and timer["source"] == "http"


def test_finished_worker_using_http_client_is_released(service: ServiceProcess) -> None:
    done = worker(f"""
        import timer_core as timer
        timer.configure(timer.HttpTimerClient({service.url!r}))
        for _ in range(3):
            with timer.expires(after=0.5, scope="quick"):
                pass
    """)
    assert done.wait(30) == 0
    timers = httpx.get(service.url + "/timers", params={"pid": done.pid}).json()["items"]
    assert [t["state"] for t in timers] == ["released"] * 3


def test_fifo_worker_using_our_file_client_is_killed(service: ServiceProcess) -> None:
    fifo = str(service.workdir / "timers.fifo")
    assert os.stat(fifo).st_mode & 0o777 == 0o600
    stuck = worker(f"""
        import time
        import timer_core as timer
        timer.configure(timer.FileTimerClient({fifo!r}))
        with timer.expires(after=0.5, scope="fifo-step"):
            time.sleep(60)
    """)
    assert_sigkilled(stuck, 30)
    assert wait_for_state(service.url, stuck.pid, "killed")["source"] == "fifo"


@pytest.mark.torch
def test_fifo_worker_using_torchs_own_client_is_killed(service: ServiceProcess) -> None:
    pytest.importorskip("torch.distributed.elastic.timer")
    fifo = str(service.workdir / "timers.fifo")
    stuck = worker(f"""
        import time
        from torch.distributed.elastic import timer
        timer.configure(timer.FileTimerClient({fifo!r}))
        with timer.expires(after=0.5):
            time.sleep(60)
    """)
    assert_sigkilled(stuck, 60)
    assert wait_for_state(service.url, stuck.pid, "killed")["source"] == "fifo"
    assert service.process is not None and service.process.poll() is None


def test_garbage_on_the_fifo_is_skipped_and_the_service_lives(
    service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    fifo = str(service.workdir / "timers.fifo")
    good = (
        f'{{"version": 1, "pid": {sleeper.pid}, "scope_id": "after-garbage", '
        f'"expiration_time": {time.time() + 60}, "signal": 9}}\n'
    ).encode()
    fd = os.open(fifo, os.O_WRONLY)
    os.write(fd, b"\xff\xfe garbage\n{not json\n" + good + b'{"pid": -1}\n')
    os.close(fd)
    timer = wait_for_state(service.url, sleeper.pid, "active")
    assert timer["scope_id"] == "after-garbage"
    assert httpx.get(service.url + "/healthz").json()["status"] == "ok"


def test_a_crash_loses_no_acknowledged_timer_and_rearmed_timers_fire(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    from tests.workers import spawn_sleeper

    due_while_down, due_after, released = spawn_sleeper(), spawn_sleeper(), spawn_sleeper()
    sleepers.extend([due_while_down, due_after, released])
    service = ServiceProcess(tmp_path).start()
    try:
        acknowledged = []
        for process, expires_in in ((due_while_down, 1.0), (due_after, 4.0), (released, 1.0)):
            response = httpx.post(
                service.url + "/timers",
                json={"pid": process.pid, "scope_id": "s", "expires_in": expires_in},
            )
            assert response.status_code == 201
            acknowledged.append(response.json()["id"])
        httpx.post(service.url + "/timers/release", json={"pid": released.pid, "scope_id": "s"})
        service.crash()
        time.sleep(1.5)  # the first deadline passes while the service is down
        assert due_while_down.poll() is None
        service.start()
        assert wait_dead(due_while_down, 5) == -signal.SIGKILL  # fires at once on restart
        assert wait_dead(due_after, 10) == -signal.SIGKILL
        expected = dict(zip(acknowledged, ["killed", "killed", "released"], strict=True))

        def states() -> dict[int, str]:
            return {
                timer_id: httpx.get(f"{service.url}/timers/{timer_id}").json()["state"]
                for timer_id in acknowledged
            }

        # The kills are recorded by group commit, a moment after the workers die.
        assert wait_until(lambda: states() == expected, timeout=10), states()
        assert released.poll() is None
        events = httpx.get(service.url + "/events", params={"limit": 1000}).json()["items"]
        acquired = [e["timer_id"] for e in events if e["kind"] == "acquired"]
        assert sorted(acquired) == sorted(acknowledged)  # none lost, none duplicated
    finally:
        service.stop()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_accepts_a_scrape_of_the_real_service(
    service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    body = {"pid": sleeper.pid, "scope_id": "s", "expires_in": 0.1}
    assert httpx.post(service.url + "/timers", json=body).status_code == 201
    assert wait_dead(sleeper) == -signal.SIGKILL
    wait_for_state(service.url, sleeper.pid, "killed")
    scrape = httpx.get(service.url + "/metrics").text
    assert 'timer_kills_total{signal="SIGKILL"} 1.0' in scrape
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_environment_variables_configure_the_service(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, env={"TIMER_SERVICE_TOKEN": "envtoken"}).start()
    try:
        assert httpx.post(service.url + "/timers", json={}).status_code == 401
    finally:
        service.stop()
