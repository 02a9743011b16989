"""``TimerRankStraggler`` (deploy/prometheus/alerts.yml), evaluated by promtool's own
rule engine over ``timer_rank_slowdown``: it fires for the slow rank of a job once it
has stayed slow five minutes, not for the job's other ranks, and ends when it is
no slower."""

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


def series(rank: int) -> str:
    return f'timer_rank_slowdown{{instance="node-a:8000", job_id="run-1", rank="{rank}"}}'


def alert_at(minute: int, firing: bool) -> dict[str, object]:
    expected: list[dict[str, object]] = []
    if firing:
        expected.append(
            {
                "exp_labels": {
                    "alertname": "TimerRankStraggler",
                    "severity": "warning",
                    "instance": "node-a:8000",
                    "job_id": "run-1",
                    "rank": "3",
                },
                "exp_annotations": {
                    "summary": "rank 3 of job run-1 is 1.3 times slower than the other ranks",
                    "description": _description(),
                },
            }
        )
    return {"eval_time": f"{minute}m", "alertname": "TimerRankStraggler", "exp_alerts": expected}


def _description() -> str:
    rules = (DEPLOY / "alerts.yml").read_text()
    start = rules.index("- alert: TimerRankStraggler")
    line = next(
        line.strip()
        for line in rules[start:].splitlines()
        if line.strip().startswith("description:")
    )
    return str(json.loads(line.removeprefix("description:").strip()))


def test_the_alert_fires_for_the_slow_rank_only_once_it_stays_slow(tmp_path: Path) -> None:
    test_file = tmp_path / "straggler_test.yml"
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(DEPLOY / "alerts.yml")],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        # Rank 3 slow for ten minutes, then its series ends (no straggler).
                        "input_series": [
                            {"series": series(3), "values": "1.3x10 stale"},
                            {"series": series(0), "values": "1x10 stale"},
                        ],
                        "alert_rule_test": [
                            alert_at(3, firing=False),
                            alert_at(6, firing=True),
                            alert_at(12, firing=False),
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
