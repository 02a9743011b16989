"""Prometheus metrics, on a registry of this app's own (never the global one).

Labels stay bounded: ``source`` (http, fifo, queue), ``signal`` and
``outcome``; never a pid or a scope.
"""

from __future__ import annotations

import signal as signal_module
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from timer_core import EventKind, TimerEvent

from .descriptor_metrics import DescriptorCollector
from .kill_metrics import KillPathCollector
from .timer_state import TimerState

if TYPE_CHECKING:
    from .service import Service

__all__ = ["ServiceMetrics"]

KILL_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600)

# Deadlines that passed, whatever happened next.
_EXPIRY_KINDS = frozenset(
    {EventKind.KILLED, EventKind.EXPIRED, EventKind.KILL_FAILED, EventKind.WORKER_GONE}
)


def _signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return "none" if number <= 0 else "other"


class ServiceMetrics:
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self._service = service
        r = self.registry
        self.acquisitions = Counter(
            "timer_acquisitions",
            "Timers armed, since this process started.",
            ["source"],
            registry=r,
        )
        self.releases = Counter(
            "timer_releases",
            "Timers released in time, since this process started.",
            ["source"],
            registry=r,
        )
        self.expirations = Counter(
            "timer_expirations",
            "Timers whose deadline passed, since this process started.",
            ["source"],
            registry=r,
        )
        self.kills = Counter(
            "timer_kills",
            "Workers signalled at expiry, since this process started.",
            ["signal"],
            registry=r,
        )
        self.failures = Counter(
            "timer_failures",
            "Requests refused (dangerous or unknown pid, bad values) and kills that failed, "
            "since this process started.",
            ["outcome"],
            registry=r,
        )
        self.kill_latency = Histogram(
            "timer_kill_latency_seconds",
            "From a timer's deadline to its worker being signalled.",
            buckets=KILL_LATENCY_BUCKETS,
            registry=r,
        )
        self.hold = Histogram(
            "timer_hold_seconds",
            "From acquire to release.",
            buckets=HOLD_BUCKETS,
            registry=r,
        )
        for outcome in ("refused", "kill_failed"):
            self.failures.labels(outcome)
        self.active = Gauge("timers_active", "Timers armed now.", registry=r)
        self.active.set_function(self._active_count)
        r.register(_HealthCollector(service))
        r.register(KillPathCollector(service))
        r.register(DescriptorCollector(lambda: service.connections))

    def _active_count(self) -> float:
        reaper = self._service.reaper
        return float(reaper.active_count()) if reaper is not None else 0.0

    def __call__(self, event: TimerEvent) -> None:
        """Listener: count one event."""
        kind = event.kind
        if kind == EventKind.ACQUIRED:
            self.acquisitions.labels(event.source).inc()
        elif kind == EventKind.RELEASED:
            self.releases.labels(event.source).inc()
            self.hold.observe(max(0.0, event.at - event.acquired_at))
        elif kind == EventKind.REFUSED:
            self.failures.labels("refused").inc()
        if kind in _EXPIRY_KINDS and (
            kind != EventKind.WORKER_GONE or event.state == TimerState.EXPIRED
        ):
            self.expirations.labels(event.source).inc()
        if kind == EventKind.KILLED and "reason" not in event.detail:
            self.kills.labels(_signal_name(event.signal)).inc()
            self.kill_latency.observe(max(0.0, float(event.detail.get("latency", 0.0))))
        elif kind == EventKind.KILL_FAILED:
            self.failures.labels("kill_failed").inc()


class _HealthCollector(Collector):
    """Reaper and recorder health, read when scraped."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        service = self._service
        reaper = service.reaper
        running = reaper is not None and reaper.is_running()
        yield GaugeMetricFamily(
            "timer_reaper_up", "1 while the reaper thread runs.", value=float(running)
        )
        since_loop = time.monotonic() - reaper.last_loop_monotonic if reaper else 0.0
        yield GaugeMetricFamily(
            "timer_reaper_seconds_since_loop",
            "Seconds since the reaper loop last ran (it runs at least once a second).",
            value=since_loop,
        )
        yield GaugeMetricFamily(
            "timer_reaper_lag_seconds",
            "How late the reaper woke for its last deadline.",
            value=reaper.last_lag_seconds if reaper else 0.0,
        )
        yield CounterMetricFamily(
            "timer_reaper_restarts",
            "Times the supervisor restarted a dead reaper thread, since this process started.",
            value=service.reaper_restarts,
        )
        recorder = service.recorder
        yield GaugeMetricFamily(
            "timer_recorder_backlog", "Events waiting to be written.", value=recorder.backlog()
        )
        yield GaugeMetricFamily(
            "timer_recorder_degraded",
            "1 while the database cannot be written.",
            value=float(recorder.degraded_reason is not None),
        )
        for name, help_text, value in (
            (
                "timer_recorder_dropped",
                "Events dropped by a full buffer, since start.",
                recorder.dropped,
            ),
            ("timer_recorder_write_errors", "Failed writes, since start.", recorder.write_errors),
            ("timer_recorder_rejected", "Events refused, since start.", recorder.rejected),
            ("timer_recorder_commits", "Group commits, since start.", recorder.commits),
            ("timer_pruned_events", "Events pruned, since start.", recorder.pruned_events),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        malformed = service.fifo.malformed_lines if service.fifo is not None else 0
        if service.user_fifos is not None:  # garbage on the per-user FIFOs counts too
            malformed += service.user_fifos.malformed_lines
        yield CounterMetricFamily(
            "timer_fifo_malformed_lines",
            "FIFO lines rejected as malformed, since start.",
            value=malformed,
        )
