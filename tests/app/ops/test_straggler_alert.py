"""``TimerRankStraggler`` (deploy/prometheus/alerts.yml), evaluated by promtool's own
rule engine over ``timer_rank_slowdown`` and ``timer_rank_straggler``: it fires for the
rank the service flagged once it has stayed slow five minutes, whatever
--straggler-ratio is, not for the job's other ranks, and ends when it is no slower."""

from __future__ import annotations

from pathlib import Path

from tests.app.ops.alert_rules import assert_rules_pass, expected_at, firing, needs_promtool

pytestmark = needs_promtool

ALERT = "TimerRankStraggler"
LABELS = {
    "severity": "warning",
    "instance": "node-a:8000",
    "job_id": "run-1",
    "rank": "3",
    "uid": "1000",
}


def summary(slowdown: str) -> str:
    return f"rank 3 of job run-1 is {slowdown} times slower than the other ranks"


def series(name: str, rank: int) -> str:
    return f'{name}{{instance="node-a:8000", job_id="run-1", rank="{rank}", uid="1000"}}'


def test_the_alert_fires_for_the_flagged_rank_only_once_it_stays_slow(tmp_path: Path) -> None:
    assert_rules_pass(
        tmp_path,
        # Rank 3 slow and flagged for ten minutes, then its series end (no straggler);
        # rank 0, the job's other rank, is shown for comparison, not flagged.
        [
            {"series": series("timer_rank_slowdown", 3), "values": "1.3x10 stale"},
            {"series": series("timer_rank_straggler", 3), "values": "1x10 stale"},
            {"series": series("timer_rank_slowdown", 0), "values": "1x10 stale"},
            {"series": series("timer_rank_straggler", 0), "values": "0x10 stale"},
        ],
        [
            expected_at(3, ALERT),
            expected_at(6, ALERT, firing(ALERT, LABELS, summary("1.3"))),
            expected_at(12, ALERT),
        ],
    )


def test_the_alert_follows_the_services_ratio_not_a_fixed_one(tmp_path: Path) -> None:
    # --straggler-ratio 1.1: a rank 1.15 times slower is flagged, and alerts. With the
    # ratio at 1.5, a rank 1.3 times slower (its job flagged for another rank) is not.
    assert_rules_pass(
        tmp_path,
        [
            {"series": series("timer_rank_slowdown", 3), "values": "1.15x10"},
            {"series": series("timer_rank_straggler", 3), "values": "1x10"},
            {"series": series("timer_rank_slowdown", 1), "values": "1.3x10"},
            {"series": series("timer_rank_straggler", 1), "values": "0x10"},
        ],
        [expected_at(6, ALERT, firing(ALERT, LABELS, summary("1.15")))],
    )
