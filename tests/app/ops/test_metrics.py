"""/metrics: counts follow real acquisitions, releases, expiries and kills; promtool agrees."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from tests.conftest import in_process, service_of
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

DEPLOY = Path(__file__).parents[3] / "deploy" / "prometheus"


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


def test_counts_follow_what_happened(
    client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    victims = [spawn_sleeper() for _ in range(2)]
    spared, observed = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([*victims, spared, observed])
    for process in victims:
        client.post("/timers", json={"pid": process.pid, "scope_id": "v", "expires_in": 0.2})
    client.post("/timers", json={"pid": spared.pid, "scope_id": "s", "expires_in": 60})
    client.post(
        "/timers", json={"pid": observed.pid, "scope_id": "o", "expires_in": 0.2, "signal": 0}
    )
    client.post("/timers", json={"pid": 0, "scope_id": "bad", "expires_in": 1})
    client.post("/timers/release", json={"pid": spared.pid, "scope_id": "s"})
    for process in victims:
        assert wait_dead(process) == -9
    wait_until(lambda: value(scrape(client), "timer_expirations_total", source="http") == 3)
    samples = scrape(client)
    assert value(samples, "timer_acquisitions_total", source="http") == 4
    assert value(samples, "timer_releases_total", source="http") == 1
    assert value(samples, "timer_expirations_total", source="http") == 3
    assert value(samples, "timer_kills_total", signal="SIGKILL") == 2
    assert value(samples, "timer_failures_total", outcome="refused") == 1
    assert value(samples, "timer_kill_latency_seconds_count") == 2
    assert value(samples, "timer_kill_latency_seconds_bucket", le="10.0") == 2
    assert value(samples, "timer_hold_seconds_count") == 1
    assert value(samples, "timers_active") == 0
    assert value(samples, "timer_reaper_up") == 1
    assert value(samples, "timer_recorder_backlog") == 0
    assert observed.poll() is None


def test_timers_active_follows_arming_and_releasing(
    client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    workers = [spawn_sleeper() for _ in range(3)]
    sleepers.extend(workers)
    for process in workers:
        client.post("/timers", json={"pid": process.pid, "scope_id": "s", "expires_in": 600})
    assert value(scrape(client), "timers_active") == 3
    client.post("/timers/release", json={"pid": workers[0].pid, "scope_id": "s"})
    assert value(scrape(client), "timers_active") == 2


def test_no_label_takes_a_pid_or_a_scope(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    client.post("/timers", json={"pid": sleeper.pid, "scope_id": "unique-scope", "expires_in": 9})
    text = client.get("/metrics").text
    assert "unique-scope" not in text and f'"{sleeper.pid}"' not in text


def test_each_app_has_its_own_registry(client: TestClient, settings: Settings) -> None:
    from dataclasses import replace

    from app.main import create_app

    other = create_app(replace(settings, db_url="sqlite://"))
    assert other.state.service.metrics.registry is not service_of(client).metrics.registry


def test_a_wrong_bearer_token_on_metrics_is_refused(settings: Settings) -> None:
    from dataclasses import replace

    from app.main import create_app

    with in_process(create_app(replace(settings, token="t"))) as secured:
        assert secured.get("/metrics").status_code == 200
        assert secured.get("/metrics", headers={"Authorization": "Bearer t"}).status_code == 200
        assert secured.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_accepts_a_live_scrape(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    client.post("/timers", json={"pid": sleeper.pid, "scope_id": "s", "expires_in": 0.1})
    assert wait_dead(sleeper) == -9
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=client.get("/metrics").text,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_accepts_the_alert_rules_and_scrape_config() -> None:
    rules = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "alerts.yml")], capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    rule_count = (DEPLOY / "alerts.yml").read_text().count("- alert:")
    assert f"SUCCESS: {rule_count} rules found" in rules.stdout
    config = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "scrape.yml")], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
