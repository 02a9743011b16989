"""Start the real ``timer-service serve`` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.second_user import SYSTEM_PYTHON, SecondUser, readable_copy
from tests.server_process import ServerProcess
from tests.waiting import wait_until

# Run by the second user (Debian's python3, standard library only): see its docstring.
CLIENT = Path(__file__).with_name("second_user_client.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess(ServerProcess):
    def __init__(
        self,
        workdir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("timer-service", workdir / "service.log", self.url + "/healthz")
        self.db_url = f"sqlite:///{workdir / 'service.db'}"
        self.extra = extra
        self.env = env or {}
        # Runs the service under this command, e.g. ("prlimit", "--nofile=256").
        self.prefix = prefix

    def command(self, *more: str) -> list[str]:
        """The command line this service runs with (plus ``more`` flags)."""
        return [
            *self.prefix,
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--port",
            str(self.port),
            "--db-url",
            self.db_url,
            *self.extra,
            *more,
        ]

    def start(self) -> ServiceProcess:
        # From the url as it is now: a test may point it at another address it binds.
        self.ready_url = self.url + "/healthz"
        self.launch(self.command(), env={**os.environ, **self.env})
        return self

    def crash(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def refused_start(workdir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """The real service started with ``flags`` that it must refuse: it exits at once, and
    this is its exit status and output (stderr holds the refusal)."""
    return subprocess.run(
        ServiceProcess(workdir).command(*flags), capture_output=True, text=True, timeout=60
    )


def wait_for_state(url: str, pid: int, state: str, timeout: float = 10) -> dict[str, Any]:
    """The newest timer of ``pid``, once it is in ``state``."""

    def newest() -> dict[str, Any] | None:
        items: list[dict[str, Any]] = httpx.get(url + "/timers", params={"pid": pid}).json()[
            "items"
        ]
        return items[0] if items else None

    reached = wait_until(lambda: (newest() or {}).get("state") == state, timeout)
    assert reached, f"pid {pid} timers never reached {state}: {newest()}"
    timer = newest()
    assert timer is not None
    return timer


def scraped(url: str, name: str, **labels: str) -> float | None:
    """One sample of the real service's /metrics, read with prometheus_client's parser:
    the value of ``name`` with exactly ``labels``, or None if there is no such sample."""
    text = httpx.get(url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def refusals(service: ServiceProcess) -> list[str]:
    """The reasons of the refusals the service has recorded."""
    items = httpx.get(service.url + "/events", params={"kind": "refused"}).json()["items"]
    return [str(item["detail"].get("reason", "")) for item in items]


def ask_as(
    who: SecondUser, target: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One request that ``who`` makes to ``target`` (``tcp://HOST:PORT`` or
    ``unix://PATH``) through second_user_client.py: (status, parsed body, or its text
    if it is not JSON)."""
    client = readable_copy(CLIENT)  # the second user may not reach the checkout
    argv = [SYSTEM_PYTHON, str(client), target, method, path, json.dumps(body) if body else "-"]
    done = who.run(argv)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    try:
        return answer["status"], json.loads(answer["body"])
    except ValueError:
        return answer["status"], answer["body"]
