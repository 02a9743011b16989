"""Prometheus metrics for file descriptors and HTTP connections, read when scraped.

A service that runs out of descriptors cannot kill: ``timer_open_fds`` over
``timer_fd_limit`` is the ratio to alert on, before it reaches the kill path's reserve.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["descriptor_families"]


def descriptor_families(
    status: dict[str, Any],
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """From ``ConnectionGate.status()``, as ``Health.descriptors`` carries it."""
    yield GaugeMetricFamily(
        "timer_open_fds", "File descriptors the service has open.", value=status["open"]
    )
    yield GaugeMetricFamily(
        "timer_fd_limit",
        "The service's open file limit (soft RLIMIT_NOFILE).",
        value=status["limit"],
    )
    yield GaugeMetricFamily(
        "timer_fd_reserved",
        "Descriptors kept free for kills: connections are shed before they are used.",
        value=status["reserved_for_kills"],
    )
    yield GaugeMetricFamily(
        "timer_http_connections", "HTTP connections open.", value=status["connections"]
    )
    shed = CounterMetricFamily(
        "timer_http_connections_shed",
        "Connections closed early: evicted (idle, to make room), refused (503 at the "
        "limit), timed_out (request not sent within --request-timeout).",
        labels=["reason"],
    )
    # Every reason the gate sheds for is in its status, counted from zero.
    for reason, count in status["connections_shed"].items():
        shed.add_metric([reason], count)
    yield shed
