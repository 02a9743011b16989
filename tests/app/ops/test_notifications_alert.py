"""``TimerNotificationsStuck`` (deploy/prometheus/alerts.yml), evaluated by promtool's
own rule engine over a series of ``timer_notification_queue``: a notification waiting
past five minutes, for five minutes, fires it; a backlog that drains does not."""

from __future__ import annotations

from pathlib import Path

from tests.app.ops.alert_rules import assert_rules_pass, expected_at, firing, needs_promtool

pytestmark = needs_promtool

ALERT = "TimerNotificationsStuck"
SERIES = 'timer_notification_queue{instance="node-a:8000", job="timer-service"}'
LABELS = {"severity": "warning", "instance": "node-a:8000", "job": "timer-service"}


def waited(minutes: int) -> dict[str, object]:
    summary = f"timer-service on node-a:8000 has a notification waiting for {minutes}m 0s"
    return firing(ALERT, LABELS, summary)


def test_a_stuck_outbox_fires_and_a_draining_one_does_not(tmp_path: Path) -> None:
    # One notification waits from minute 0 (its age grows a minute a minute) until it is
    # sent at minute 16; then a short backlog of two minutes drains.
    stuck = " ".join(str(60 * minute) for minute in range(16))
    assert_rules_pass(
        tmp_path,
        [{"series": SERIES, "values": f"{stuck} 0 60 120 0 0"}],
        [
            expected_at(9, ALERT),  # over 300 s from minute 6: pending
            expected_at(11, ALERT, waited(11)),  # 5 minutes over: firing
            expected_at(15, ALERT, waited(15)),
            expected_at(16, ALERT),  # sent
            expected_at(19, ALERT),  # a short backlog, drained
        ],
    )
