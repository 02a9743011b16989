"""deploy/grafana/timer-service.json (contract 13): it is what build_dashboard.py builds,
Grafana's import can take it (a datasource input, every panel on the datasource
variable), and every query of every panel returns data from a real Prometheus (Debian's)
scraping a real ``timer-service`` that killed a labelled worker (an incident), saw a
straggler and delivered a notification.

Grafana's variables are given as Grafana would on this scene: ``$job`` and
``$instance`` the scraped service's, ``$__rate_interval`` and ``$__range`` 5m (longer
than the test's Prometheus has run, so a range holds all it scraped)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.job_over_http import arm_rank
from tests.app.notify.receiver import Receiver, start_receiver
from tests.app.service_process import ServiceProcess, scraped
from tests.deploy.prometheus_process import JOB, PrometheusProcess, needs_prometheus
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "timer-service.json"
BUILDER = GRAFANA / "build_dashboard.py"
RANGE = "5m"
STRAGGLING_JOB = "steady-job"
HUNG_JOB = "hung-job"


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but the rows, those in collapsed rows too."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def targets(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, query) of every panel's every target."""
    return [
        (panel["title"], target["expr"]) for panel in panels(board) for target in panel["targets"]
    ]


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def test_the_committed_dashboard_is_what_the_builder_builds() -> None:
    built = subprocess.run(
        [sys.executable, str(BUILDER), "--stdout"], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout == DASHBOARD.read_text(), (
        "deploy/grafana/timer-service.json differs from what build_dashboard.py builds: "
        "run python deploy/grafana/build_dashboard.py and commit both"
    )


def test_grafana_can_import_it_on_any_prometheus() -> None:
    board = dashboard()
    [source] = board["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    shown = panels(board)
    assert len(shown) >= 25
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in shown)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), ids
    # Each panel on the 24-column grid, none over another.
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    # No query is padded to look non-empty, and each is scoped by the variables.
    for title, expr in targets(board):
        assert "vector(" not in expr, (title, expr)
        assert "$job" in expr and "$instance" in expr, (title, expr)


@dataclass(frozen=True)
class Scene:
    service: ServiceProcess
    prometheus: PrometheusProcess

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """``expr`` as Grafana sends it for this scene's service."""
        for variable, value in (
            ("$__rate_interval", RANGE),
            ("$__range", RANGE),
            ("$instance", self.instance),
            ("$job", JOB),
        ):
            expr = expr.replace(variable, value)
        return self.prometheus.query(expr)

    def answers(self, expr: str) -> bool:
        """``expr`` returns data now."""
        return has_data(self.query(expr))

    def counts(self, expr: str) -> bool:
        """``expr`` sums above 0 now."""
        return sum(numbers(self.query(expr))) > 0


def numbers(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def has_data(result: list[dict[str, Any]]) -> bool:
    """Samples, each a number (a quantile or a ratio of nothing is NaN: no data)."""
    return bool(result) and all(math.isfinite(value) for value in numbers(result))


def release(service: ServiceProcess, pid: int) -> None:
    answer = httpx.post(service.url + "/timers/release", json={"pid": pid, "scope_id": "step"})
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """A service scraped by Prometheus from its start, that then saw a straggler (rank 1
    of a job holding its step longer than rank 0), killed a worker of another job (an
    incident) and delivered the notifications of both to a real receiver."""
    workdir = tmp_path_factory.mktemp("grafana")
    # A window of one release: each rank's pace is its one hold.
    service = ServiceProcess(workdir, "--straggler-window", "1").start()
    prometheus: PrometheusProcess | None = None
    receiver: Receiver | None = None
    workers = [spawn_sleeper() for _ in range(3)]
    try:
        prometheus = PrometheusProcess(workdir, [f"127.0.0.1:{service.port}"]).start()
        scene = Scene(service, prometheus)
        # Scraped before anything happens: every counter and histogram bucket has a
        # sample at 0, so what follows is an increase.
        assert wait_until(
            lambda: scene.query('timer_kill_latency_seconds_count{job=~"$job"}'), 30
        ), prometheus.log()[-3000:]
        receiver = start_receiver()
        channel = {"name": "ops", "url": receiver.url, "events": ["kill", "incident", "straggler"]}
        answer = httpx.post(service.url + "/channels", json=channel)
        assert answer.status_code == 201, answer.text
        rank0, rank1, hung = workers
        # Rank 1's hold spans rank 0's whole hold and 0.3 s more: past the ratio of 1.2
        # unless rank 0's took over 1.5 s.
        arm_rank(service, rank1.pid, STRAGGLING_JOB, 1, 2, 60)
        arm_rank(service, rank0.pid, STRAGGLING_JOB, 0, 2, 60)
        release(service, rank0.pid)
        time.sleep(0.3)  # rank 1 works on a little longer (its slowness, not a wait)
        release(service, rank1.pid)
        arm_rank(service, hung.pid, HUNG_JOB, 0, 1, 0.3)
        assert_sigkilled(hung)
        assert wait_until(
            lambda: (
                (scraped(service.url, "timer_notifications_total", state="delivered") or 0) >= 2
                and scraped(
                    service.url,
                    "timer_rank_straggler",
                    job_id=STRAGGLING_JOB,
                    rank="1",
                    uid=str(os.getuid()),
                )
                == 1
            ),
            30,
        ), service.log()[-3000:]
        yield scene
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        if receiver is not None:
            receiver.close()
        if prometheus is not None:
            prometheus.stop()
        service.stop()


@needs_prometheus
def test_every_panel_query_returns_data_from_a_real_prometheus(scene: Scene) -> None:
    empty = []
    for title, expr in targets(dashboard()):
        # Polled: a rate needs two scrapes of what changed.
        if not wait_until(partial(scene.answers, expr), 20):
            empty.append((title, expr, scene.query(expr)))
    assert not empty, "panels with no data:\n" + "\n".join(map(repr, empty))


@needs_prometheus
def test_the_overview_shows_the_kill_the_incident_and_the_straggler(scene: Scene) -> None:
    queries = {title: expr for title, expr in targets(dashboard())}
    # The service's first kill and incident since it started: counted, not lost as a
    # series that appeared at 1.
    for title in ("Kills", "Incidents"):
        assert wait_until(partial(scene.counts, queries[title]), 20), title
    flagged = scene.query(queries["Stragglers now"])
    assert [(s["metric"]["job_id"], s["metric"]["rank"]) for s in flagged] == [
        (STRAGGLING_JOB, "1")
    ]
    assert numbers(flagged)[0] >= 1.2


@needs_prometheus
def test_the_variables_list_the_scraped_service(scene: Scene) -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert variables["job"]["query"] == "label_values(timers_active, job)"
    assert scene.prometheus.label_values("job", "timers_active") == [JOB]
    assert variables["instance"]["query"] == 'label_values(timers_active{job=~"$job"}, instance)'
    match = f'timers_active{{job=~"{JOB}"}}'
    assert scene.prometheus.label_values("instance", match) == [scene.instance]
