"""A real server a test starts as a process of its own: its output goes to a log file,
the start returns once it answers over HTTP, and the stop ends it for sure. What the
timer service, Prometheus and the like share; each says how it is started."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.waiting import wait_until

__all__ = ["ServerProcess"]

# How much of the log an error carries: the end, where a server says why it stopped.
_LOG_TAIL = 3000


class ServerProcess:
    """``name`` names the server in errors; ``ready_url`` answers 200 once it serves."""

    def __init__(self, name: str, log_path: Path, ready_url: str) -> None:
        self.name = name
        self.log_path = log_path
        self.ready_url = ready_url
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self, argv: list[str], *, timeout: float = 30, **popen: Any) -> None:
        """Run ``argv`` (``popen``: more of Popen's arguments, e.g. ``env``, ``cwd``) and
        wait until it is ready; a server that exits or is not ready in time is stopped
        and the error ends with its log."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **popen)
        log.close()
        if not wait_until(self.ready, timeout=timeout):
            # Stopped here, or it outlives the test and a later one fails on its warning.
            self.stop()
            raise RuntimeError(f"{self.name} did not become ready: {self.log()[-_LOG_TAIL:]}")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log()[-_LOG_TAIL:]}")
        try:
            return httpx.get(self.ready_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not ended 15 s later."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
