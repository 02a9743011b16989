"""A hub keeps no timers (contract 9): writes meet NoTimersHere (answered 409 over HTTP,
tests/app/db/test_fleet_nodes.py), reads of its engine find nothing, and a refusal it
decides outside any engine is still logged, on one line whatever the request held."""

from __future__ import annotations

import logging

import pytest

from app.hub import Hub, NoTimersHere
from timer_core.engine.arm_request import ArmRequest, Origin


def test_a_hub_has_no_engine_to_arm_with_and_none_to_read() -> None:
    hub = Hub()
    with pytest.raises(NoTimersHere, match="worker's own node"):
        hub.timers_here()
    assert hub.local_node is None
    assert list(hub.live_timers()) == [] and hub.active_count() == 0
    assert hub.soonest(10, pid=None, scope_contains=None) == ((), 0)
    assert hub.loop_health().running is False and hub.loop_health().problem is None
    assert hub.kill_report() == {}


def test_a_refusal_on_a_hub_is_logged_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    forged = "step\n2025-01-31 12:00:00,000 INFO timer_core.expiry: timer 1 killed"
    with caplog.at_level(logging.WARNING, logger="app.service"):
        Hub().refused(
            ArmRequest(4242, forged, -1, 0),
            Origin("http", 1001, "uid 1001 (tcp 127.0.0.1:5000)"),
            "it belongs to uid 0",
        )
    [record] = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "pid=4242" in line and "uid 1001" in line, line
