"""The alerts of deploy/prometheus/alerts.yml, evaluated by promtool's own rule engine
(``promtool test rules``): what one alert is expected to be at a minute of an input
series, and a run of promtool over them that must pass."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["ALERTS", "assert_rules_pass", "expected_at", "firing", "needs_promtool"]

ALERTS = Path(__file__).parents[3] / "deploy" / "prometheus" / "alerts.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus)"
)


def firing(alertname: str, labels: dict[str, str], summary: str) -> dict[str, object]:
    """One firing alert: its labels besides ``alertname``, its summary, and the
    description alerts.yml gives it (promtool compares annotations whole)."""
    return {
        "exp_labels": {"alertname": alertname, **labels},
        "exp_annotations": {"summary": summary, "description": _description(alertname)},
    }


def expected_at(minute: int, alertname: str, *alerts: dict[str, object]) -> dict[str, object]:
    """At ``minute``, ``alertname`` fires exactly ``alerts`` (none: it does not fire)."""
    return {"eval_time": f"{minute}m", "alertname": alertname, "exp_alerts": list(alerts)}


def assert_rules_pass(
    workdir: Path, input_series: list[dict[str, str]], expected: list[dict[str, object]]
) -> None:
    """promtool evaluates alerts.yml over ``input_series`` (a sample a minute) and finds
    every alert as ``expected`` says."""
    # YAML is a superset of JSON: the test file is written as JSON.
    test_file = workdir / "alerts_test.yml"
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(ALERTS)],
                "evaluation_interval": "1m",
                "tests": [
                    {"interval": "1m", "input_series": input_series, "alert_rule_test": expected}
                ],
            }
        )
    )
    result = subprocess.run(
        ["promtool", "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _description(alertname: str) -> str:
    rules = ALERTS.read_text()
    start = rules.index(f"- alert: {alertname}\n")
    line = next(
        line.strip()
        for line in rules[start:].splitlines()
        if line.strip().startswith("description:")
    )
    return str(json.loads(line.removeprefix("description:").strip()))
