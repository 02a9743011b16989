"""bench/recorder_backends.py keeps working: its smoke run writes through the real
recorder on SQLite and on the real PostgreSQL server, and loses nothing. (Timings are
not asserted: this machine is shared and noisy.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.postgres import PostgresDatabase

REPO = Path(__file__).parents[2]


def test_recorder_backends_smoke_writes_every_event_on_both(
    postgres_database: PostgresDatabase,
) -> None:
    command = [sys.executable, "-m", "bench.recorder_backends", "--smoke"]
    command += ["--postgres", postgres_database.url()]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = json.loads((REPO / "bench" / "results" / "recorder_backends_smoke.json").read_text())
    rows = {row["backend"]: row for row in saved["rows"]}
    assert sorted(rows) == ["postgresql", "sqlite"]
    for row in rows.values():
        assert row["events"] == 3000 and row["rounds"] == 1 and row["lost"] == 0, row
        assert row["median_events_per_s"] > 0 and row["median_commits"] >= 1, row
