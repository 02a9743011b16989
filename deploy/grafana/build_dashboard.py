"""Build the Grafana dashboard of timer-service's metrics, deploy/grafana/timer-service.json.

Run from anywhere: ``python deploy/grafana/build_dashboard.py`` rewrites the JSON next to
this file; ``--stdout`` prints it instead (the test compares the two). It is built with
Grafana's own typed builders (``grafana-foundation-sdk``, in the test extra), so a panel
or option Grafana does not know fails here rather than in Grafana.

Every query selects ``job=~"$job", instance=~"$instance"``: Prometheus's job and
instance labels, one instance per node's service. Series the whole fleet reports
alike (``timer_nodes``, read from the shared database) take the max over instances.
The test (tests/deploy/test_grafana_dashboard.py) runs every query below through a real
Prometheus scraping a real service that killed a worker: each must return data.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["OUTPUT", "build", "dashboard_json", "main"]

OUTPUT = Path(__file__).with_name("timer-service.json")
UID = "timer-service"
# The import's input (``__inputs``): Grafana's import asks which Prometheus to use and
# writes its uid wherever ``${DS_PROMETHEUS}`` stands, here the datasource variable's
# default; the panels follow the variable, so it can be switched later.
DS_INPUT = "DS_PROMETHEUS"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
SELECTOR = 'job=~"$job", instance=~"$instance"'


def m(metric: str, **labels: str) -> str:
    """``metric`` with the dashboard's job and instance selector (and ``labels``)."""
    more = "".join(f', {name}="{value}"' for name, value in labels.items())
    return f"{metric}{{{SELECTOR}{more}}}"


def per_minute(counter: str, by: str = "", **labels: str) -> str:
    """A counter's rate, per minute: kills and incidents are rare, a per-second rate of
    them reads as 0.02."""
    grouping = f" by ({by})" if by else ""
    return f"60 * sum{grouping} (rate({m(counter, **labels)}[$__rate_interval]))"


def quantile(q: float, histogram: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) (rate({m(histogram + '_bucket')}[$__rate_interval])))"
    )


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Chart:
    """One panel: a time series by default, ``kind`` ``stat`` or ``table`` otherwise."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8


@dataclass(frozen=True)
class Section:
    title: str
    charts: tuple[Chart, ...]


def q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


def quantiles(histogram: str) -> tuple[Query, ...]:
    """The histogram's median, p90 and p99: each latency chart shows the same three."""
    return tuple(Query(quantile(p / 100, histogram), f"p{p}") for p in (50, 90, 99))


PER_MINUTE = "suffix: /min"

SECTIONS = (
    Section(
        "Overview",
        (
            Chart(
                "Active timers",
                "Timers armed now, on the selected services.",
                q(f"sum({m('timers_active')})"),
                kind="stat",
                width=4,
            ),
            Chart(
                "Kills",
                "Workers signalled at expiry over the dashboard's time range.",
                q(f"sum(increase({m('timer_kills_total')}[$__range]))"),
                kind="stat",
                width=4,
            ),
            Chart(
                "Incidents",
                "Job captures over the time range: a labelled job's timer expired and its "
                "ranks' stacks were taken before the kill. GET /incidents names the suspect.",
                q(f"sum(increase({m('timer_incidents_total')}[$__range]))"),
                kind="stat",
                width=4,
            ),
            Chart(
                "Unkillable workers",
                "Workers alive --unkillable-after seconds past their SIGKILL, now "
                "(stuck in the kernel). GET /events?kind=unkillable says where.",
                q(f"sum({m('timer_unkillable_workers')})"),
                kind="stat",
                width=4,
            ),
            Chart(
                "Nodes down",
                "Nodes of the fleet silent for --node-timeout (every node reports the "
                "whole fleet: the max over them). GET /nodes names them.",
                q(f"max({m('timer_nodes', status='down')})"),
                kind="stat",
                width=4,
            ),
            Chart(
                "Overdue kills",
                "Due kills not acted on within the stack budget plus its margin, now: "
                "workers that should be dead and are not.",
                q(f"sum({m('timer_kills_overdue')})"),
                kind="stat",
                width=4,
            ),
        ),
    ),
    Section(
        "Timers",
        (
            Chart(
                "Active timers",
                "Timers armed now, per service.",
                q(f"sum by (instance) ({m('timers_active')})", "{{instance}}"),
            ),
            Chart(
                "Arms, releases and expirations",
                "Per minute, by source (http, fifo). An expiration is a deadline that "
                "passed, killed or not.",
                (
                    Query(per_minute("timer_acquisitions_total", "source"), "armed ({{source}})"),
                    Query(per_minute("timer_releases_total", "source"), "released ({{source}})"),
                    Query(per_minute("timer_expirations_total", "source"), "expired ({{source}})"),
                ),
                unit=PER_MINUTE,
            ),
            Chart(
                "Hold time",
                "From acquire to release, quantiles over the released timers.",
                quantiles("timer_hold_seconds"),
                unit="s",
            ),
        ),
    ),
    Section(
        "Kills",
        (
            Chart(
                "Kills",
                "Workers signalled at expiry per minute, by signal.",
                q(per_minute("timer_kills_total", "signal"), "{{signal}}"),
                unit=PER_MINUTE,
            ),
            Chart(
                "Kill latency",
                "From a timer's deadline to its worker being signalled (it includes the "
                "stack capture before the signal, bounded by the stack budget).",
                (
                    *quantiles("timer_kill_latency_seconds"),
                    Query(
                        f"sum(rate({m('timer_kill_latency_seconds_sum')}[$__rate_interval]))"
                        f" / sum(rate({m('timer_kill_latency_seconds_count')}"
                        "[$__rate_interval]))",
                        "mean",
                    ),
                ),
                unit="s",
            ),
            Chart(
                "Refused requests and failed kills",
                "Per minute: refused (a dangerous or unknown pid, bad values) and "
                "kill_failed (the signal could not be sent: GET /events?kind=kill_failed).",
                q(per_minute("timer_failures_total", "outcome"), "{{outcome}}"),
                unit=PER_MINUTE,
            ),
        ),
    ),
    Section(
        "Incidents and stragglers",
        (
            Chart(
                "Incidents",
                "Job captures per minute, per service (an incident spanning nodes counts on each).",
                q(per_minute("timer_incidents_total", "instance"), "{{instance}}"),
                unit=PER_MINUTE,
            ),
            Chart(
                "Unkillable workers",
                "Workers that outlived their SIGKILL, now, per service: drain the node "
                "or fix the mount or device they wait on.",
                q(f"sum by (instance) ({m('timer_unkillable_workers')})", "{{instance}}"),
            ),
            Chart(
                "Rank slowdown",
                "Each rank's median hold over the other ranks', for jobs with a straggler "
                "only (at most --straggler-max-series series).",
                q(m("timer_rank_slowdown"), "{{job_id}} rank {{rank}} (uid {{uid}})"),
                unit="x",
            ),
            Chart(
                "Stragglers now",
                "The ranks flagged now (slower by --straggler-ratio): /ui/jobs/JOB marks "
                "them, GET /events?kind=straggler names the scope.",
                q(f"{m('timer_rank_slowdown')} and {m('timer_rank_straggler')} == 1"),
                unit="x",
                kind="table",
                width=24,
            ),
        ),
    ),
    Section(
        "Notifications",
        (
            Chart(
                "Deliveries",
                "Notifications this service finished sending, per minute, by outcome "
                "(delivered, failed, gave_up, silenced). GET /deliveries has each one.",
                q(per_minute("timer_notifications_total", "state"), "{{state}}"),
                unit=PER_MINUTE,
                width=12,
            ),
            Chart(
                "Oldest waiting notification",
                "Seconds the oldest notification not yet sent has waited (0: none waits). "
                "Minutes mean a channel keeps failing.",
                q(f"max({m('timer_notification_queue')})", "oldest"),
                unit="s",
                width=12,
            ),
        ),
    ),
    Section(
        "Fleet",
        (
            Chart(
                "Nodes",
                "Nodes sharing the database, up and down (down: silent for "
                "--node-timeout). Every node reports the fleet: the max over them.",
                q(f"max by (status) ({m('timer_nodes')})", "{{status}}"),
            ),
            Chart(
                "Scraped",
                "1 while Prometheus reaches the service (TimerServiceDown fires on 0).",
                q(f"up{{{SELECTOR}}}", "{{instance}}"),
            ),
            Chart(
                "Database up",
                "1 while the service's database answers; kills go on without it, their "
                "events are written when it returns.",
                q(m("timer_database_up"), "{{instance}}"),
            ),
        ),
    ),
    Section(
        "Kill path health",
        (
            Chart(
                "Reaper",
                "How late the reaper woke for its last deadline, and how long since its "
                "loop last ran (it runs at least once a second).",
                (
                    Query(m("timer_reaper_lag_seconds"), "lag {{instance}}"),
                    Query(m("timer_reaper_seconds_since_loop"), "since loop {{instance}}"),
                ),
                unit="s",
            ),
            Chart(
                "Reaper running",
                "1 while the reaper thread runs; restarts of a dead reaper by the "
                "supervisor over each interval.",
                (
                    Query(m("timer_reaper_up"), "up {{instance}}"),
                    Query(
                        f"increase({m('timer_reaper_restarts_total')}[$__rate_interval])",
                        "restarts {{instance}}",
                    ),
                ),
            ),
            Chart(
                "Overdue kills",
                "Due kills past the stack budget plus its margin: now, and newly overdue "
                "over each interval.",
                (
                    Query(m("timer_kills_overdue"), "now {{instance}}"),
                    Query(
                        f"increase({m('timer_overdue_kills_total')}[$__rate_interval])",
                        "new {{instance}}",
                    ),
                ),
            ),
            Chart(
                "Expiry errors and stack captures",
                "Exceptions on the expiry path, and stack captures abandoned at their "
                "budget (over each interval); captures still blocked now.",
                (
                    Query(
                        f"increase({m('timer_expiry_errors_total')}[$__rate_interval])",
                        "expiry errors {{instance}}",
                    ),
                    Query(
                        f"increase({m('timer_stack_captures_abandoned_total')}[$__rate_interval])",
                        "captures abandoned {{instance}}",
                    ),
                    Query(m("timer_stack_captures_hung"), "captures hung {{instance}}"),
                ),
            ),
            Chart(
                "Refusals over a user's share",
                "Arms and heartbeats refused per minute: rate (--max-events-per-user-per-"
                "second) or history_full (--max-db-size).",
                q(per_minute("timer_refusals_total", "reason"), "{{reason}}"),
                unit=PER_MINUTE,
            ),
            Chart(
                "File descriptors",
                "Open descriptors and those kept free for kills, over the limit "
                "(TimerDescriptorsNearLimit fires above 80 %).",
                (
                    Query(f"{m('timer_open_fds')} / {m('timer_fd_limit')}", "open {{instance}}"),
                    Query(
                        f"{m('timer_fd_reserved')} / {m('timer_fd_limit')}",
                        "kept for kills {{instance}}",
                    ),
                ),
                unit="percentunit",
            ),
            Chart(
                "HTTP connections",
                "Connections open now, and those shed per minute by reason (evicted, "
                "refused, timed_out).",
                (
                    Query(m("timer_http_connections"), "open {{instance}}"),
                    Query(per_minute("timer_http_connections_shed_total", "reason"), "{{reason}}"),
                ),
            ),
        ),
    ),
    Section(
        "Recording",
        (
            Chart(
                "Recorder backlog",
                "Events waiting to be written, and the age of the oldest.",
                (
                    Query(m("timer_recorder_backlog"), "events {{instance}}"),
                    Query(m("timer_recorder_backlog_age_seconds"), "age (s) {{instance}}"),
                ),
            ),
            Chart(
                "Events lost",
                "Events dropped by a full buffer and failed writes over each interval; "
                "lost events nobody acknowledged (POST /losses/acknowledge).",
                (
                    Query(
                        f"increase({m('timer_recorder_dropped_total')}[$__rate_interval])",
                        "dropped {{instance}}",
                    ),
                    Query(
                        f"increase({m('timer_recorder_write_errors_total')}[$__rate_interval])",
                        "write errors {{instance}}",
                    ),
                    Query(m("timer_lost_events_unacknowledged"), "unacknowledged {{instance}}"),
                ),
            ),
            Chart(
                "Malformed FIFO lines",
                "Lines on the FIFOs that are not torch's v1 JSON, over each interval.",
                q(
                    f"increase({m('timer_fifo_malformed_lines_total')}[$__rate_interval])",
                    "{{instance}}",
                ),
            ),
        ),
    ),
)


def _targets(chart: Chart) -> list[prometheus.Dataquery]:
    """A stat or table shows the value now: an instant query; a table, as rows."""
    instant, table_form = chart.kind in ("stat", "table"), chart.kind == "table"
    targets = []
    for number, query in enumerate(chart.queries):
        target = (
            prometheus.Dataquery()
            .expr(query.expr)
            .ref_id(chr(ord("A") + number))
            .legend_format(query.legend or "__auto")
        )
        if table_form:
            target = target.instant().format(PromQueryFormat.TABLE)
        elif instant:
            target = target.instant()
        targets.append(target)
    return targets


def _panel(chart: Chart, panel_id: int) -> Builder[models.Panel]:
    built: stat.Panel | table.Panel | timeseries.Panel
    if chart.kind == "stat":
        built = (
            stat.Panel()
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.VALUE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    elif chart.kind == "table":
        built = table.Panel()
    else:
        built = timeseries.Panel().legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    for target in _targets(chart):
        built = built.with_target(target)
    panel: Builder[models.Panel] = (
        built.id(panel_id)
        .title(chart.title)
        .description(chart.description)
        .datasource(DATASOURCE)
        .unit(chart.unit)
        .span(chart.width)
        .height(4 if chart.kind == "stat" else 8)
    )
    return panel


def _variables() -> list[dashboard_builders.DatasourceVariable | dashboard_builders.QueryVariable]:
    datasource = (
        dashboard_builders.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(models.VariableOption(text=f"${{{DS_INPUT}}}", value=f"${{{DS_INPUT}}}"))
    )

    def labels(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(models.VariableOption(text="All", value="$__all"))
        )

    return [
        datasource,
        labels("job", "Job", "label_values(timers_active, job)"),
        labels("instance", "Service", 'label_values(timers_active{job=~"$job"}, instance)'),
    ]


def build() -> dict[str, object]:
    """The dashboard as Grafana's import takes it (``__inputs`` first)."""
    board = (
        dashboard_builders.Dashboard("timer-service")
        .uid(UID)
        .description(
            "Kills, incidents, stragglers, notifications, the fleet and the kill path's "
            "health of timer-service (deploy/grafana/README.md)."
        )
        .tags(["timer-service"])
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .variables(list(_variables()))
    )
    panel_id = 1
    for section in SECTIONS:
        # An open row: its panels follow it on the dashboard (Grafana strips the panels
        # held inside a row unless it is collapsed, and a collapsed row hides them).
        board = board.with_row(dashboard_builders.Row(section.title).id(panel_id).collapsed(False))
        panel_id += 1
        for chart in section.charts:
            board = board.with_panel(_panel(chart, panel_id))
            panel_id += 1
    built: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    inputs = [
        {
            "name": DS_INPUT,
            "label": "Prometheus",
            "description": "The Prometheus that scrapes timer-service",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    requires = [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    ]
    return {"__inputs": inputs, "__requires": requires, **built}


def dashboard_json() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stdout", action="store_true", help="print it, write no file")
    args = parser.parse_args(argv)
    text = dashboard_json()
    if args.stdout:
        sys.stdout.write(text)
    else:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
