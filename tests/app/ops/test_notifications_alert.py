"""``TimerNotificationsStuck`` (deploy/prometheus/alerts.yml), evaluated by promtool's
own rule engine over a series of ``timer_notification_queue``: a notification waiting
past five minutes, for five minutes, fires it; a backlog that drains does not."""

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

SERIES = 'timer_notification_queue{instance="node-a:8000", job="timer-service"}'


def expected(minute: int, waited: int | None) -> dict[str, object]:
    alerts: list[dict[str, object]] = []
    if waited is not None:
        alerts.append(
            {
                "exp_labels": {
                    "alertname": "TimerNotificationsStuck",
                    "severity": "warning",
                    "instance": "node-a:8000",
                    "job": "timer-service",
                },
                "exp_annotations": {
                    "summary": "timer-service on node-a:8000 has a notification waiting "
                    f"for {waited}m 0s",
                    "description": _description(),
                },
            }
        )
    return {"eval_time": f"{minute}m", "alertname": "TimerNotificationsStuck", "exp_alerts": alerts}


def _description() -> str:
    rules = (DEPLOY / "alerts.yml").read_text()
    start = rules.index("- alert: TimerNotificationsStuck")
    line = next(
        line.strip()
        for line in rules[start:].splitlines()
        if line.strip().startswith("description:")
    )
    return str(json.loads(line.removeprefix("description:").strip()))


def test_a_stuck_outbox_fires_and_a_draining_one_does_not(tmp_path: Path) -> None:
    # One notification waits from minute 0 (its age grows a minute a minute) until it is
    # sent at minute 16; then a short backlog of two minutes drains.
    stuck = " ".join(str(60 * minute) for minute in range(16))
    values = f"{stuck} 0 60 120 0 0"
    test_file = tmp_path / "notifications_test.yml"
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(DEPLOY / "alerts.yml")],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [{"series": SERIES, "values": values}],
                        "alert_rule_test": [
                            expected(9, None),  # over 300 s from minute 6: pending
                            expected(11, 11),  # 5 minutes over: firing
                            expected(15, 15),
                            expected(16, None),  # sent
                            expected(19, None),  # a short backlog, drained
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
