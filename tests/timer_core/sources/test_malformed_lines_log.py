"""A FIFO's malformed lines have a share of the log (timer_core.sources.fifo_lines):
a second user writing junk into its own FIFO logged 44,502 WARNING lines in 3 s. Past
the burst, each FIFO logs a few a second and then says how many it left out; every
line is still counted and reported, and another FIFO's lines keep their own share."""

from __future__ import annotations

import logging

import pytest

from timer_core.engine.clock import ManualClock
from timer_core.sources.fifo_lines import LOG_BURST, LOG_PER_SECOND, FifoLines, MalformedLines

FLOODED = "line on the FIFO /fifos/1001 of uid 1001"
OTHER = "line on the FIFO /fifos/1002 of uid 1002"


def test_a_flood_of_malformed_lines_logs_its_burst_then_a_few_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    reported: list[str] = []
    lines = MalformedLines(logging.getLogger("test.malformed"), reported.append)
    lines._monotonic = clock.monotonic
    flooded, other = FifoLines(FLOODED, lines), FifoLines(OTHER, lines)
    with caplog.at_level(logging.WARNING, logger="test.malformed"):
        for _ in range(10_000):
            assert flooded.requests(b"x\n") == []
        other.requests(b"x\n")
        assert len(caplog.records) == LOG_BURST + 1
        caplog.clear()
        clock.advance(1.0)
        for _ in range(10_000):
            flooded.requests(b"x\n")
    assert lines.count == 20_001 and len(reported) == 20_001
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == LOG_PER_SECOND
    assert logged[0].endswith(f"({10_000 - LOG_BURST} more before it not logged)")
    assert all(message.startswith(f"skipping a malformed {FLOODED}") for message in logged)
