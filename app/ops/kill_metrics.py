"""Metrics of the kill path's own health, and of losses that outlive a restart.

- ``timer_kills_overdue`` (gauge): due kills not acted on within the stack budget
  plus the margin, now. Any value above 0 means workers that should be dead are not.
- ``timer_overdue_kills_total`` (counter, since start): due kills that went overdue,
  each counted once, whether they were sent late or never.
- ``timer_expiry_errors_total`` (counter, since start): exceptions on the expiry path
  (each still signalled the worker or recorded ``kill_failed``).
- ``timer_stack_captures_hung`` (gauge) and ``timer_stack_captures_abandoned_total``
  (counter, since start): captures that overran their budget and were left behind.
- ``timer_lost_events_unacknowledged`` (gauge, from the database, so it survives
  restarts): events lost and not yet acknowledged (``POST /losses/acknowledge``).

The gauge of overdue kills is not named ``timer_overdue_kills``: that is the counter's
family name, and one name may not be both.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app.ops.health import Health

__all__ = ["kill_path_families"]


def kill_path_families(health: Health) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """From the engine's KillWatch (through ``health.kills``) and the loss ledger."""
    kills = health.kills
    yield GaugeMetricFamily(
        "timer_kills_overdue",
        "Due kills not acted on within the stack budget plus the margin, now.",
        value=kills.get("overdue", 0),
    )
    yield CounterMetricFamily(
        "timer_overdue_kills",
        "Due kills that went past the stack budget plus the margin, each once, since "
        "this process started.",
        value=kills.get("overdue_total", 0),
    )
    yield CounterMetricFamily(
        "timer_expiry_errors",
        "Exceptions on the expiry path since this process started (the worker was "
        "signalled anyway, or kill_failed recorded).",
        value=kills.get("expiry_errors", 0),
    )
    yield GaugeMetricFamily(
        "timer_stack_captures_hung",
        "Stack captures past their budget whose thread is still blocked.",
        value=kills.get("captures_hung", 0),
    )
    yield CounterMetricFamily(
        "timer_stack_captures_abandoned",
        "Stack captures abandoned at their budget since this process started.",
        value=health.captures_abandoned,
    )
    yield GaugeMetricFamily(
        "timer_lost_events_unacknowledged",
        "Events lost (dropped or refused by the database) and not acknowledged; kept "
        "in the database, so it survives restarts.",
        value=health.lost_events_unacknowledged,
    )
