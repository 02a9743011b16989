"""Start the real ``timer-service serve`` process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
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
        self.db_url = f"sqlite:///{workdir / 'service.db'}"
        self.extra = extra
        self.env = env or {}
        # Runs the service under this command, e.g. ("prlimit", "--nofile=256").
        self.prefix = prefix
        self.process: subprocess.Popen[bytes] | None = None

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
        log = open(self.workdir / "service.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"timer-service exited: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"timer-service did not become healthy: {self.log()}")

    def log(self) -> str:
        return (self.workdir / "service.log").read_text(errors="replace")

    def crash(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
