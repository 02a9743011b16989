"""Each benchmark's smoke mode runs, so the scripts keep working. Timings are not
asserted here (this machine is shared and noisy); correctness of what they count is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import PostgresDatabase
from timer_core.diagnosis.stack_capture import StackCapturer

REPO = Path(__file__).parents[2]
RESULTS = REPO / "bench" / "results"


def run_smoke(module: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result_json: dict[str, Any] = json.loads((RESULTS / f"{module}_smoke.json").read_text())
    return result_json


@pytest.mark.slow
def test_kill_latency_smoke_kills_every_worker() -> None:
    rows = run_smoke("kill_latency")["rows"]
    assert {row["server"] for row in rows} >= {
        "LocalTimerServer",
        "FileTimerServer",
        "service, HTTP",
        "service, FIFO",
    }
    assert all(row["missed"] == 0 and row["n"] == 3 for row in rows)


@pytest.mark.slow
def test_idle_cost_smoke() -> None:
    rows = run_smoke("idle_cost")["rows"]
    assert rows and all(row["rss_mb"] > 0 for row in rows)


@pytest.mark.slow
def test_fifo_throughput_smoke_loses_nothing() -> None:
    rows = run_smoke("fifo_throughput")["rows"]
    assert rows and all(row["lost"] == 0 and row["processed"] == 400 for row in rows)


@pytest.mark.slow
def test_http_throughput_smoke_records_every_event() -> None:
    rows = run_smoke("http_throughput")["rows"]
    assert rows and all(row["errors"] == 0 and row["events_lost"] == 0 for row in rows)


@pytest.mark.slow
def test_growth_smoke() -> None:
    payload = run_smoke("growth")
    assert payload["events"] == 20_000 and payload["bytes"] > 0
    assert len(payload["read_median_ms"]) == 6


@pytest.mark.slow
def test_wal_growth_smoke_keeps_the_wal_below_100_mb() -> None:
    """3,000 FIFO events a second for 10 s: about 300 MB of WAL if nothing bounded it."""
    payload = run_smoke("wal_growth")
    assert payload["events"] > 10_000
    assert payload["wal_max_mb"] < 100


@pytest.mark.slow
def test_dashboard_state_smoke() -> None:
    rows = run_smoke("dashboard_state")["rows"]
    assert [row["timers"] for row in rows] == [1000] and rows[0]["median_ms"] > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_http_wrk_smoke_records_every_answered_request() -> None:
    result = run_smoke("http_wrk")
    assert result["ratio"] > 0
    assert result["service_answered_2xx"] > 0
    assert result["events_recorded"] >= result["service_answered_2xx"]
    # The service's CPU time was read, and a request costs it something.
    assert result["service_cpu_us_per_request"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)  # eight rows, a fresh service each: as long as run_smoke waits
def test_attacks_smoke_kills_every_probe_under_every_attack() -> None:
    rows = {row["attack"]: row for row in run_smoke("attacks")["rows"]}
    assert list(rows) == [
        "baseline",
        "planted FIFO + link",
        "idle flood, 256 fds",
        "40 at once",
        "4 dashboard readers",
        "FIFO burst",
        "capture-slot flood",
        "unread flood",
    ]
    for row in rows.values():
        if "skipped" in row:  # no prlimit, or no second user, on this machine
            continue
        assert row["missed"] == 0 and row["death"]["n"] == row["probes"], row
        # Every probe's killed event is recorded, with the method that took its stack.
        assert sum(row["stacks"].values()) == row["probes"], row
    assert rows["40 at once"]["probes"] == 40
    flood = rows["capture-slot flood"]
    assert "skipped" in flood or flood["victim"]["stack"] == "py-spy", flood
    unread = rows["unread flood"]
    assert "skipped" in unread or unread["rss_mb"]["peak"] < 600, unread


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: py-spy attaches with ptrace")
@pytest.mark.skipif(StackCapturer().py_spy is None, reason="needs py-spy (pip install py-spy)")
def test_incident_capture_plain_smoke_captures_every_rank() -> None:
    rows = run_smoke("incident_capture_plain")["rows"]
    assert [row["ranks"] for row in rows] == [1, 2]
    for row in rows:
        assert row["stacks"] == [row["ranks"]] * row["rounds"], row
        assert row["capture_median_ms"] > 0 and row["kill_latency_median_ms"] > 0


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: py-spy attaches with ptrace")
@pytest.mark.skipif(StackCapturer().py_spy is None, reason="needs py-spy (pip install py-spy)")
def test_incident_capture_smoke_takes_every_torch_rank_each_way() -> None:
    """Every rank of every round is taken by the way it measures: over its worker
    server, or by py-spy with the server left out."""
    pytest.importorskip("torch.distributed")
    rows = run_smoke("incident_capture")["rows"]
    assert [row["ranks"] for row in rows] == [1, 2]
    for row in rows:
        for way in ("worker-server", "py-spy"):
            result = row[way]
            assert result["methods"] == [[way] * row["ranks"]] * row["rounds"], (way, row)
            assert result["capture_median_ms"] > 0 and result["kill_median_ms"] > 0


@pytest.mark.slow
def test_fleet_smoke_records_every_pair_on_postgres(postgres_database: PostgresDatabase) -> None:
    """bench/fleet.py on the session's PostgreSQL server (a database of its own there):
    one node service fed by torch's FileTimerClient, every pair recorded; the reads."""
    pytest.importorskip("torch.distributed.elastic.timer")
    from psycopg.conninfo import make_conninfo

    server = make_conninfo(**{key: str(value) for key, value in postgres_database.params.items()})
    result = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--smoke", "--postgres", server],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads((RESULTS / "fleet_smoke.json").read_text())
    [row] = payload["writes"]
    [single] = row["rounds"]
    assert row["nodes"] == 1 and row["lost"] == 0, row
    assert single["pairs_sent"] > 0 and single["pairs_complete"] == single["pairs_sent"]
    assert single["events_recorded"] >= single["events_expected"]
    assert single["timers_labelled"] >= single["pairs_sent"]
    [read] = payload["reads"]
    assert read["rows"] == 10_000 and len(read["latency"]) == 4
    assert all(stats["n"] == 20 and stats["p50_ms"] > 0 for stats in read["latency"].values())


def test_scope_stats_smoke_replays_every_end_of_the_big_scope() -> None:
    payload = run_smoke("scope_stats")
    assert payload["whatif"]["considered"] == payload["big_scope"]
    assert payload["whatif"]["hangs"] > 0


def test_timeout_rules_smoke_replays_every_rule_on_every_history() -> None:
    rules = run_smoke("timeout_rules")["rules"]
    assert set(rules) == {"mlp-checkpoint", "mlp-busy-node", "ddp-gloo-2"}
    for by_rule in rules.values():
        assert len(by_rule) == 4
        assert all(result["timeout_steps"] > 1 for result in by_rule.values())
