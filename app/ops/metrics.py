"""Prometheus metrics, on a registry of this app's own (never the global one).

Labels stay bounded: ``source`` (http, fifo, queue), ``signal`` and
``outcome``; never a pid or a scope.
"""

from __future__ import annotations

import logging
import signal as signal_module
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app import log_names
from app.ops.descriptor_metrics import descriptor_families
from app.ops.health import Health
from app.ops.kill_metrics import kill_path_families
from timer_core import EventKind, Timer, TimerEvent, TimerState
from timer_core.engine import END_KINDS
from timer_core.engine.event_details import Kill, Unkillable
from timer_core.engine.user_share import REFUSAL_REASONS

__all__ = ["ServiceMetrics"]

logger = logging.getLogger(log_names.METRICS)

KILL_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600)

# The sources the service arms timers from (the mp queue is the library's, not the
# service's): their counters start at 0.
SERVICE_SOURCES = ("http", "fifo")

# The states a timer ends in once its deadline passed, whatever happened next.
_PAST_DEADLINE = frozenset({TimerState.EXPIRED, TimerState.KILLED})


def _signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return "none" if number <= 0 else "other"


class ServiceMetrics:
    """Fed the engine's events (as a listener) and, when scraped, the service's health:
    it needs nothing else of the service."""

    def __init__(
        self,
        health: Callable[[], Health],
        node_counts: Callable[[], dict[str, int] | None] | None = None,
        *,
        refusals: Callable[[], Mapping[str, int]] | None = None,
        notifications: Callable[[], tuple[Mapping[str, int], float]] | None = None,
    ) -> None:
        """``node_counts``: how many nodes of the fleet are up and down, per scrape;
        ``refusals``: requests refused over a user's share, by reason, since start;
        ``notifications``: the sender's outcomes since start, by state, and its queue's
        age in seconds (contract 11)."""
        self.registry = CollectorRegistry()
        r = self.registry

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=r)

        since = "since this process started."
        self.acquisitions = counter("timer_acquisitions", f"Timers armed, {since}", "source")
        self.releases = counter("timer_releases", f"Timers released in time, {since}", "source")
        self.expirations = counter(
            "timer_expirations", f"Timers whose deadline passed, {since}", "source"
        )
        self.kills = counter("timer_kills", f"Workers signalled at expiry, {since}", "signal")
        self.failures = counter(
            "timer_failures",
            "Requests refused (dangerous or unknown pid, bad values) and kills that failed, "
            + since,
            "outcome",
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
        self.incidents = counter(
            "timer_incidents",
            "Job captures this node made: a job's timer expired, and the stacks of the "
            "job's processes here were captured before any signal to it (one per job "
            "and --incident-window; an incident spanning nodes counts on each).",
        )
        # Up at a worker's unkillable event, down at its exit (contract 10): this node's,
        # since start (a restart forgets the ones still stuck; the event log keeps them).
        self.unkillable = Gauge(
            "timer_unkillable_workers",
            "Workers still alive --unkillable-after seconds after their SIGKILL, now: stuck "
            "in the kernel (D state: a driver, NFS, FUSE, a GPU call). GET "
            "/events?kind=unkillable says where each waits.",
            registry=r,
        )
        for outcome in ("refused", "kill_failed"):
            self.failures.labels(outcome)
        # Series that exist from the start, at 0: a series first scraped at 1 is no
        # increase to Prometheus, so increase() and rate() (TimerKillsHappening, the
        # Grafana panels) would miss the first kill after every start.
        for source in SERVICE_SOURCES:
            for per_source in (self.acquisitions, self.releases, self.expirations):
                per_source.labels(source)
        self.kills.labels(_signal_name(signal_module.SIGKILL))
        r.register(_HealthCollector(health))
        if node_counts is not None:
            r.register(_NodesCollector(node_counts))
        if refusals is not None:
            r.register(_RefusalsCollector(refusals))
        if notifications is not None:
            r.register(_NotificationsCollector(notifications))

    def __call__(self, event: TimerEvent) -> None:
        """Listener: count one event."""
        kind, timer, detail = event.kind, event.timer, event.detail
        if kind == EventKind.ACQUIRED:
            self.acquisitions.labels(timer.source).inc()
        elif kind == EventKind.RELEASED and isinstance(timer, Timer):
            self.releases.labels(timer.source).inc()
            self.hold.observe(max(0.0, event.at - timer.acquired_at))
        elif kind == EventKind.REFUSED:
            self.failures.labels("refused").inc()
        elif kind == EventKind.INCIDENT:
            self.incidents.inc()
        elif isinstance(detail, Unkillable) and detail.exited:
            self.unkillable.dec()
        elif isinstance(detail, Unkillable):
            self.unkillable.inc()
        if isinstance(timer, Timer) and kind in END_KINDS and timer.state in _PAST_DEADLINE:
            self.expirations.labels(timer.source).inc()
        if isinstance(detail, Kill) and detail.sent_signal:
            self.kills.labels(_signal_name(timer.signal)).inc()
            self.kill_latency.observe(max(0.0, detail.late))
        elif kind == EventKind.KILL_FAILED:
            self.failures.labels("kill_failed").inc()


class _RefusalsCollector(Collector):
    """``timer_refusals_total{reason}``: arms and heartbeats refused over a user's share
    of the disk (``rate``: --max-events-per-user-per-second; ``history_full``:
    --max-db-size). Counted in the engine: most are not written as events (issue 20)."""

    def __init__(self, refusals: Callable[[], Mapping[str, int]]) -> None:
        self._refusals = refusals

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "timer_refusals",
            "Timer requests refused over a user's share (rate) or a full history "
            "(history_full), since this process started.",
            labels=["reason"],
        )
        counts = dict(self._refusals())
        for reason in REFUSAL_REASONS:
            family.add_metric([reason], counts.get(reason, 0))
        yield family


class _NotificationsCollector(Collector):
    """``timer_notifications_total{state}`` (delivered, failed, gave_up, silenced: this
    node's sends since start) and ``timer_notification_queue`` (seconds the oldest
    notification not yet delivered has waited, fleet-wide; 0: none waits). No label
    names a channel: its name is the admin's text, its URL a secret."""

    def __init__(self, notifications: Callable[[], tuple[Mapping[str, int], float]]) -> None:
        self._notifications = notifications

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        outcomes, queue_age = self._notifications()
        family = CounterMetricFamily(
            "timer_notifications",
            "Notification deliveries this node finished, by outcome, since it started.",
            labels=["state"],
        )
        for state, count in outcomes.items():
            family.add_metric([state], count)
        yield family
        yield GaugeMetricFamily(
            "timer_notification_queue",
            "Seconds the oldest notification not yet sent has waited (0: none waits).",
            value=queue_age,
        )


class _NodesCollector(Collector):
    """``timer_nodes{status}``: the fleet's nodes, up and down (one query per scrape)."""

    def __init__(self, node_counts: Callable[[], dict[str, int] | None]) -> None:
        self._node_counts = node_counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "timer_nodes",
            "Nodes sharing this database, by status: down once silent for --node-timeout.",
            labels=["status"],
        )
        try:
            counts = self._node_counts()
        except Exception:  # a scrape must not fail on the database: no sample, not a 500
            logger.exception("could not count the nodes for timer_nodes")
            return
        if counts is None:  # the database is away (logged once, by DatabaseStatus)
            return
        for status in ("up", "down"):
            family.add_metric([status], counts.get(status, 0))
        yield family


class _HealthCollector(Collector):
    """Timers, reaper, recorder, kill path and descriptors: one ``Health`` per scrape."""

    def __init__(self, health: Callable[[], Health]) -> None:
        self._health = health

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        health = self._health()
        yield GaugeMetricFamily("timers_active", "Timers armed now.", value=health.active_timers)
        yield from () if health.hub else _reaper_families(health)
        recorder = health.recorder
        yield GaugeMetricFamily(
            "timer_recorder_backlog", "Events waiting to be written.", value=recorder.backlog
        )
        yield GaugeMetricFamily(
            "timer_recorder_backlog_age_seconds",
            "Seconds since the oldest event waiting to be written happened (0: none waits).",
            value=recorder.backlog_age_seconds,
        )
        yield GaugeMetricFamily(
            "timer_database_up",
            "1 while the database answers (probe, batches and reads); 0 while it is away.",
            value=float(health.database_problem is None),
        )
        yield GaugeMetricFamily(
            "timer_recorder_degraded",
            "1 while the database cannot be written.",
            value=float(recorder.last_error is not None),
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
        yield CounterMetricFamily(
            "timer_fifo_malformed_lines",
            "FIFO lines rejected as malformed, since start.",
            value=health.fifo_malformed_lines,
        )
        yield from kill_path_families(health)
        yield from descriptor_families(health.descriptors)


def _reaper_families(health: Health) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The reaper's gauges: not on a hub, which runs none (its alerts would fire)."""
    reaper = health.reaper
    yield GaugeMetricFamily(
        "timer_reaper_up", "1 while the reaper thread runs.", value=float(reaper.running)
    )
    yield GaugeMetricFamily(
        "timer_reaper_seconds_since_loop",
        "Seconds since the reaper loop last ran (it runs at least once a second).",
        value=reaper.seconds_since_loop or 0.0,
    )
    yield GaugeMetricFamily(
        "timer_reaper_lag_seconds",
        "How late the reaper woke for its last deadline.",
        value=reaper.lag_seconds or 0.0,
    )
    yield CounterMetricFamily(
        "timer_reaper_restarts",
        "Times the supervisor restarted a dead reaper thread, since this process started.",
        value=health.reaper_restarts,
    )
