"""bench/notifications.py's smoke mode runs: every kill told, every incident sent once.
Timings are not asserted (a shared machine); what they count is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_notifications_smoke_tells_every_kill_and_incident() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.notifications", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    measured = json.loads((REPO / "bench" / "results" / "notifications_smoke.json").read_text())
    assert measured["delay"]["n"] == 5
    assert measured["outbox"]["incidents"] == 100
    assert measured["outbox"]["sent_per_second"] > 0
