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
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from timer_core import Reaper

if TYPE_CHECKING:
    from .service import Service

__all__ = ["ERROR_WINDOW_SECONDS", "KillPathCollector", "kill_path_report"]

# An error on the expiry path keeps /healthz degraded for this long after it.
ERROR_WINDOW_SECONDS = 600.0


def kill_path_report(reaper: Reaper | None) -> dict[str, Any]:
    """The kill path's health, for /healthz: ``problem`` (overdue kills: failing) and
    ``recent_error`` (degraded) are set only when there is one."""
    if reaper is None:
        return {}
    watch = reaper.kill_watch
    overdue = watch.check()
    captures = reaper.expiry.captures
    return {
        "overdue": overdue.count,
        "oldest_overdue_seconds": overdue.oldest_seconds,
        "overdue_after_seconds": overdue.allowance,
        "overdue_total": watch.overdue_total,
        "in_flight": watch.in_flight(),
        "expiry_errors": watch.errors_total,
        "recent_error": watch.recent_error(ERROR_WINDOW_SECONDS),
        "captures_hung": captures.hung() if captures is not None else 0,
        "problem": overdue.problem(),
    }


class KillPathCollector(Collector):
    """Read when scraped, from the engine's KillWatch and the loss ledger."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        reaper = self._service.reaper
        watch = reaper.kill_watch if reaper is not None else None
        overdue = watch.check() if watch is not None else None
        yield GaugeMetricFamily(
            "timer_kills_overdue",
            "Due kills not acted on within the stack budget plus the margin, now.",
            value=overdue.count if overdue is not None else 0,
        )
        yield CounterMetricFamily(
            "timer_overdue_kills",
            "Due kills that went past the stack budget plus the margin, each once, since "
            "this process started.",
            value=watch.overdue_total if watch is not None else 0,
        )
        yield CounterMetricFamily(
            "timer_expiry_errors",
            "Exceptions on the expiry path since this process started (the worker was "
            "signalled anyway, or kill_failed recorded).",
            value=watch.errors_total if watch is not None else 0,
        )
        captures = reaper.expiry.captures if reaper is not None else None
        yield GaugeMetricFamily(
            "timer_stack_captures_hung",
            "Stack captures past their budget whose thread is still blocked.",
            value=captures.hung() if captures is not None else 0,
        )
        yield CounterMetricFamily(
            "timer_stack_captures_abandoned",
            "Stack captures abandoned at their budget since this process started.",
            value=captures.abandoned_total if captures is not None else 0,
        )
        yield GaugeMetricFamily(
            "timer_lost_events_unacknowledged",
            "Events lost (dropped or refused by the database) and not acknowledged; kept "
            "in the database, so it survives restarts.",
            value=self._service.losses.unacknowledged(),
        )
