"""A real Prometheus (Debian's ``prometheus``) for the tests of what we ship for it:
scraping targets every second into a storage directory of the test's own, on a free
loopback port, and asked through its HTTP API as Grafana asks it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import free_port
from tests.server_process import ServerProcess

__all__ = ["JOB", "PROMETHEUS", "PrometheusProcess", "needs_prometheus"]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
# The scrape job's name: the ``job`` label of every series scraped.
JOB = "timer-service"

needs_prometheus = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(),
    reason="no prometheus binary (Debian: prometheus; scripts/install-test-deps installs it)",
)


class PrometheusProcess(ServerProcess):
    """``prometheus`` scraping ``targets`` (``host:port``) once a second as job ``JOB``."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = targets
        super().__init__("prometheus", workdir / "prometheus.log", self.url + "/-/ready")

    def start(self) -> PrometheusProcess:
        config = self.workdir / "prometheus.yml"
        # YAML is a superset of JSON: the configuration is written as JSON.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": self.targets}]}
                    ],
                }
            )
        )
        self.launch(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            cwd=self.workdir,
        )
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query now (``/api/v1/query``), which must succeed: a
        list of ``{"metric": labels, "value": [time, "text"]}`` (a scalar's is one)."""
        answer = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        answer = httpx.get(
            f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        values: list[str] = answer.json()["data"]
        return values
