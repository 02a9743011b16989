"""The show-one commands: ``timer ID``, ``job JOB_ID`` (its ranks) and ``stack
TIMER_ID`` (the text the service captured before the kill, printed as is but for
characters a terminal would act on, escaped: see ``safe_text``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from rich.table import Table
from rich.text import Text

from app.cli.client.connection import Connection
from app.cli.client.exits import ClientError, ExitCode
from app.cli.client.safe_text import printable
from app.cli.client.tables import (
    Column,
    as_text,
    console,
    ident,
    print_json,
    state_text,
    table,
    when,
)

__all__ = ["RANK_COLUMNS", "fields_table", "show_job", "show_stack", "show_timer"]


def fields_table(rows: list[tuple[str, str | Text]]) -> Table:
    """One object's fields, a name and a value a line."""
    shown = Table(box=None, show_header=False, pad_edge=False)
    shown.add_column(style="bold", no_wrap=True)
    shown.add_column(overflow="fold")
    for name, value in rows:
        shown.add_row(name, as_text(value))
    return shown


def show_timer(args: argparse.Namespace, connection: Connection, client: httpx.Client) -> int:
    timer = connection.get(client, f"/timers/{args.timer_id}")
    if args.json:
        print_json(timer)
        return 0
    rows: list[tuple[str, str | Text]] = [
        ("id", ident(timer["id"])),
        ("state", state_text(timer["state"])),
        ("pid", ident(timer["pid"])),
        ("uid", ident(timer.get("uid"))),
        ("scope", timer["scope_id"]),
        ("signal", ident(timer["signal"])),
        ("node", timer.get("node") or "-"),
        ("job", timer.get("job_id") or "-"),
        ("rank", _rank(timer)),
        ("acquired", when(timer["acquired_at"]) + " UTC"),
        ("deadline", when(timer["expiration_time"]) + " UTC"),
        ("ended", when(timer.get("ended_at")) + (" UTC" if timer.get("ended_at") else "")),
        ("end reason", timer.get("end_reason") or "-"),
        ("timeout", timer.get("timeout_source") or "-"),
    ]
    console().print(fields_table(rows))
    if timer["state"] in ("killed", "expired"):
        print(f"its stack: timer-service stack {timer['id']}", file=sys.stderr)
    return 0


def _rank(timer: Mapping[str, Any]) -> str:
    if timer.get("rank") is None:
        return "-"
    local = f", local {timer['local_rank']}" if timer.get("local_rank") is not None else ""
    world = f" of {timer['world_size']}" if timer.get("world_size") is not None else ""
    return f"{timer['rank']}{world}{local}"


def _slowdown(row: Mapping[str, Any]) -> str:
    value = row.get("slowdown")
    return "-" if value is None else f"{value:.2f}x"


RANK_COLUMNS = (
    Column("RANK", lambda row: ident(row.get("rank")), justify="right"),
    Column("LOCAL", lambda row: ident(row.get("local_rank")), justify="right"),
    Column("NODE", lambda row: str(row.get("node") or "-"), text=True),
    Column("PID", lambda row: ident(row.get("pid")), justify="right"),
    Column("TIMER", lambda row: ident(row.get("timer_id"))),
    Column("STATE", lambda row: state_text(str(row.get("state")))),
    Column("SCOPE", lambda row: str(row.get("scope_id") or "-"), text=True),
    Column("SLOWDOWN", _slowdown, justify="right"),
    Column("LAST SEEN (UTC)", lambda row: when(row.get("last_seen"))),
)


def show_job(args: argparse.Namespace, connection: Connection, client: httpx.Client) -> int:
    job = connection.get(client, f"/jobs/{quote(args.job_id, safe='')}", {"uid": args.uid})
    if args.json:
        print_json(job)
        return 0
    rows: list[tuple[str, str | Text]] = [
        ("job", job["job_id"]),
        ("uid", ident(job.get("uid"))),
        ("world size", ident(job.get("world_size"))),
        ("ranks seen", ident(job.get("ranks_seen"))),
        ("active timers", ident(job.get("active_timers"))),
        ("incidents", ident(job.get("incidents"))),
        ("nodes", ", ".join(job.get("nodes") or []) or "-"),
        ("first seen", when(job.get("first_seen")) + " UTC"),
        ("last seen", when(job.get("last_seen")) + " UTC"),
    ]
    out = console()
    out.print(fields_table(rows))
    out.print()
    out.print(table(RANK_COLUMNS, job.get("ranks") or []))
    if job.get("ranks_omitted"):
        print(f"{job['ranks_omitted']} more ranks not listed", file=sys.stderr)
    if job.get("incidents"):
        print(
            printable(f"its incidents: timer-service incidents --job {quote(job['job_id'])}"),
            file=sys.stderr,
        )
    return 0


def show_stack(args: argparse.Namespace, connection: Connection, client: httpx.Client) -> int:
    path = f"/timers/{args.timer_id}/stack"
    if args.incident is not None:
        path = _capture_path(connection, client, args.incident, args.timer_id)
    response = connection.get_response(client, path)
    # As is, so it can be saved or diffed, but for what a terminal would act on: a
    # worker names its own files and threads. How it was taken goes to stderr.
    text = printable(response.text, keep="\n\t")
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    method = response.headers.get("x-stack-method")
    if method:
        seconds = response.headers.get("x-stack-seconds")
        took = f" in {seconds} s" if seconds else ""
        truncated = ", truncated" if response.headers.get("x-stack-truncated") == "true" else ""
        print(printable(f"(captured by {method}{took}{truncated})"), file=sys.stderr)
    return 0


def _capture_path(
    connection: Connection, client: httpx.Client, incident_id: int, timer_id: int
) -> str:
    """Where the incident keeps the stack it captured of the rank with this timer
    (every rank's, the ones not killed too)."""
    incident = connection.get(client, f"/incidents/{incident_id}")
    for rank in incident.get("ranks") or []:
        if rank.get("timer_id") == timer_id:
            return f"/incidents/{incident_id}/captures/{rank['capture_id']}/stack"
    raise ClientError(
        ExitCode.NOT_FOUND,
        f"incident {incident_id} captured no rank with timer {timer_id}: its ranks' timers "
        f"are in `timer-service incident {incident_id}`",
    )
