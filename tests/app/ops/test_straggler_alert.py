"""``TimerRankStraggler`` (deploy/prometheus/alerts.yml), evaluated by promtool's own
rule engine over ``timer_rank_slowdown``: it fires for the slow rank of a job once it
has stayed slow five minutes, not for the job's other ranks, and ends when it is
no slower."""

from __future__ import annotations

from pathlib import Path

from tests.app.ops.alert_rules import assert_rules_pass, expected_at, firing, needs_promtool

pytestmark = needs_promtool

ALERT = "TimerRankStraggler"
LABELS = {"severity": "warning", "instance": "node-a:8000", "job_id": "run-1", "rank": "3"}
SUMMARY = "rank 3 of job run-1 is 1.3 times slower than the other ranks"


def series(rank: int) -> str:
    return f'timer_rank_slowdown{{instance="node-a:8000", job_id="run-1", rank="{rank}"}}'


def test_the_alert_fires_for_the_slow_rank_only_once_it_stays_slow(tmp_path: Path) -> None:
    assert_rules_pass(
        tmp_path,
        # Rank 3 slow for ten minutes, then its series ends (no straggler).
        [
            {"series": series(3), "values": "1.3x10 stale"},
            {"series": series(0), "values": "1x10 stale"},
        ],
        [
            expected_at(3, ALERT),
            expected_at(6, ALERT, firing(ALERT, LABELS, SUMMARY)),
            expected_at(12, ALERT),
        ],
    )
