"""A real Alertmanager (Debian's ``prometheus-alertmanager``), started by the test on a
free loopback port with a configuration of its own and no cluster, and stopped after
it; the tests read the alerts back through its own v2 API."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import free_port
from tests.waiting import wait_until

__all__ = ["AlertmanagerProcess", "alertmanager"]

BINARY = "prometheus-alertmanager"
_CONFIG = """
route:
  receiver: nobody
  group_wait: 1h
receivers:
  - name: nobody
"""


@dataclass
class AlertmanagerProcess:
    url: str
    process: subprocess.Popen[bytes]

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """The alerts it holds (``GET /api/v2/alerts``), resolved ones included when
        asked (``active="false"`` etc. as its API takes them)."""
        answer = httpx.get(self.url + "/api/v2/alerts", params=filters, timeout=5)
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()
        return found


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerProcess]:
    binary = shutil.which(BINARY) or (
        f"/usr/bin/{BINARY}" if os.path.exists(f"/usr/bin/{BINARY}") else None
    )
    if binary is None:
        pytest.skip(f"needs {BINARY} (Debian: apt-get install {BINARY}; scripts/test installs it)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(_CONFIG)
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    running = AlertmanagerProcess(f"http://127.0.0.1:{port}", process)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError((tmp_path / "alertmanager.log").read_text())
        try:
            return httpx.get(running.url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(ready, timeout=20), (tmp_path / "alertmanager.log").read_text()
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
