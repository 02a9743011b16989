"""``TimerWorkerUnkillable`` (deploy/prometheus/alerts.yml), evaluated by promtool's own
rule engine (``promtool test rules``) over a series of ``timer_unkillable_workers``:
it fires while a worker is stuck past its SIGKILL, at once, and ends when it exits."""

from __future__ import annotations

from pathlib import Path

from tests.app.ops.alert_rules import assert_rules_pass, expected_at, firing, needs_promtool

pytestmark = needs_promtool

ALERT = "TimerWorkerUnkillable"
SERIES = 'timer_unkillable_workers{instance="node-a:8000", job="timer-service"}'
LABELS = {"severity": "critical", "instance": "node-a:8000", "job": "timer-service"}


def stuck(workers: int) -> dict[str, object]:
    return firing(ALERT, LABELS, f"{workers} workers on node-a:8000 outlived their SIGKILL")


def test_the_alert_fires_while_a_worker_is_stuck_and_ends_at_its_exit(tmp_path: Path) -> None:
    assert_rules_pass(
        tmp_path,
        # None stuck, one, two, then both exit.
        [{"series": SERIES, "values": "0 0 1 2 0 0"}],
        [
            expected_at(1, ALERT),
            expected_at(2, ALERT, stuck(1)),
            expected_at(3, ALERT, stuck(2)),
            expected_at(4, ALERT),
        ],
    )
