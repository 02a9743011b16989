"""The real service makes each user's stack dump directory when a timer asks for dumps
(``--stack-dir``), and a FIFO or a link the worker's user plants there neither blocks
the capture nor delays the kill."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.app.service_process import ServiceProcess, wait_for_state
from tests.dump_paths import REASONS, SECRET, WorkerUser, other_user, plant, spawn_worker
from tests.second_user import SecondUser, shared_dir
from tests.waiting import wait_until
from tests.workers import assert_sigkilled


def test_the_stack_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().stack_dir is None  # the default for the service's user, at start
    monkeypatch.setenv("TIMER_SERVICE_STACK_DIR", "/srv/stacks")
    assert Settings.from_env().stack_dir == "/srv/stacks"
    assert Settings.from_env(stack_dir="/elsewhere").stack_dir == "/elsewhere"


@pytest.fixture
def user(second_user: SecondUser) -> Iterator[WorkerUser]:
    with shared_dir(0o755) as reachable:
        yield other_user(second_user, reachable / "stacks")


@pytest.mark.parametrize("what", ["fifo", "link"])
def test_a_planted_fifo_or_link_does_not_stop_the_kill(
    user: WorkerUser, tmp_path: Path, what: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    env = {"TIMER_SERVICE_STACK_PY_SPY": "false"}
    service = ServiceProcess(tmp_path, "--stack-dir", str(user.root), env=env).start()
    worker = spawn_worker(user)
    try:
        body = {"pid": worker.pid, "scope_id": "hung", "dump_signal": int(signal.SIGUSR2)}
        armed = httpx.post(service.url + "/timers", json={**body, "expires_in": 60})
        assert armed.status_code == 201, armed.text
        directory = user.root / str(user.uid)
        assert wait_until(directory.is_dir)  # made at the acquisition, for the worker's uid
        made = os.lstat(directory)
        assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (user.uid, 0o700)

        plant(user, what, directory / f"{worker.pid}.stack", secret)
        soon = httpx.post(service.url + "/timers", json={**body, "expires_in": 0.3})
        assert soon.status_code == 200, soon.text
        assert_sigkilled(worker)
        timer = wait_for_state(service.url, worker.pid, "killed")
        events = httpx.get(service.url + "/events", params={"timer_id": timer["id"]}).json()
        [killed] = [event for event in events["items"] if event["kind"] == "killed"]
        notes = killed["detail"]["stack"]["notes"]
        assert any(REASONS[what] in note for note in notes), notes
        stack = httpx.get(f"{service.url}/timers/{timer['id']}/stack")
        assert stack.headers["x-stack-method"] == "proc" and SECRET not in stack.text
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        service.stop()


def test_the_service_makes_its_own_users_directory_too(tmp_path: Path) -> None:
    """No second user needed: a worker of the service's own user (root or not)."""
    root = tmp_path / "stacks"
    service = ServiceProcess(tmp_path, "--stack-dir", str(root)).start()
    worker = subprocess.Popen(["sleep", "300"])
    try:
        body = {
            "pid": worker.pid,
            "scope_id": "s",
            "expires_in": 60,
            "dump_signal": int(signal.SIGUSR2),
        }
        assert httpx.post(service.url + "/timers", json=body).status_code == 201
        directory = root / str(os.getuid())
        assert wait_until(directory.is_dir)
        assert stat.S_IMODE(os.lstat(root).st_mode) == 0o711
        assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700
    finally:
        worker.kill()
        worker.wait()
        service.stop()
