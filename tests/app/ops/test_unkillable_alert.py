"""``TimerWorkerUnkillable`` (deploy/prometheus/alerts.yml), evaluated by promtool's own
rule engine (``promtool test rules``) over a series of ``timer_unkillable_workers``:
it fires while a worker is stuck past its SIGKILL, at once, and ends when it exits."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[3] / "deploy" / "prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus)"
)

SERIES = 'timer_unkillable_workers{instance="node-a:8000", job="timer-service"}'
LABELS = {
    "alertname": "TimerWorkerUnkillable",
    "severity": "critical",
    "instance": "node-a:8000",
    "job": "timer-service",
}


def alert_at(minute: int, firing: bool, workers: int = 1) -> dict[str, object]:
    expected: list[dict[str, object]] = []
    if firing:
        expected.append(
            {
                "exp_labels": LABELS,
                "exp_annotations": {
                    "summary": f"{workers} workers on node-a:8000 outlived their SIGKILL",
                    "description": _description(),
                },
            }
        )
    return {"eval_time": f"{minute}m", "alertname": "TimerWorkerUnkillable", "exp_alerts": expected}


def _description() -> str:
    rules = (DEPLOY / "alerts.yml").read_text()
    start = rules.index("- alert: TimerWorkerUnkillable")
    line = next(
        line.strip()
        for line in rules[start:].splitlines()
        if line.strip().startswith("description:")
    )
    return str(json.loads(line.removeprefix("description:").strip()))


def test_the_alert_fires_while_a_worker_is_stuck_and_ends_at_its_exit(tmp_path: Path) -> None:
    # YAML is a superset of JSON: the test file is written as JSON.
    test_file = tmp_path / "unkillable_test.yml"
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(DEPLOY / "alerts.yml")],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        # None stuck, one, two, then both exit.
                        "input_series": [{"series": SERIES, "values": "0 0 1 2 0 0"}],
                        "alert_rule_test": [
                            alert_at(1, firing=False),
                            alert_at(2, firing=True),
                            alert_at(3, firing=True, workers=2),
                            alert_at(4, firing=False),
                        ],
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        ["promtool", "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
