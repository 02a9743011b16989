"""The list commands, one per list of the REST API, with that list's filters:
``timers``, ``events``, ``jobs``, ``incidents``, ``nodes``. Each prints one page, newest
first, as a table (``--json``: the page as the service answered it); ``--cursor``
goes on from where ``next`` said."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.cli.client.connection import Connection
from app.cli.client.safe_text import printable
from app.cli.client.tables import (
    Column,
    console,
    detail_text,
    ident,
    kind_text,
    print_json,
    ranks_text,
    state_text,
    table,
    when,
)
from timer_core.engine import EventKind, TimerState

__all__ = [
    "EVENT_COLUMNS",
    "LISTINGS",
    "Filter",
    "Listing",
    "add_listing_flags",
    "list_page",
    "print_page",
]


@dataclass(frozen=True)
class Filter:
    param: str  # the query parameter; the flag is it with dashes: --timer-id
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.param.replace("_", "-")


@dataclass(frozen=True)
class Listing:
    name: str  # the subcommand, and what its rows are called
    path: str
    help: str
    filters: tuple[Filter, ...]
    columns: tuple[Column, ...]
    paged: bool = True


def _cell(field: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: ident(row.get(field))


def _text(field: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: str(row.get(field) or "-")


def _time(field: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: when(row.get(field))


_NODE = Filter("node", "only those of this node (a service's --node-name)")
_JOB = Filter("job", "only those of this job (torchrun's TORCHELASTIC_RUN_ID)")

TIMER_COLUMNS = (
    Column("ID", _cell("id")),
    Column("STATE", lambda row: state_text(row["state"])),
    Column("PID", _cell("pid"), justify="right"),
    Column("SCOPE", _text("scope_id"), text=True),
    Column("JOB", _text("job_id"), text=True),
    Column("RANK", _cell("rank"), justify="right"),
    Column("NODE", _text("node"), text=True),
    # The deadline of an active timer, else when it ended: one column of 19 is what an
    # 80-column terminal has room for (both are in ``timer ID``).
    Column("UNTIL (UTC)", lambda row: when(row.get("ended_at") or row.get("expiration_time"))),
)
EVENT_COLUMNS = (
    Column("ID", _cell("id")),
    Column("AT (UTC)", _time("at")),
    Column("KIND", lambda row: kind_text(row["kind"])),
    Column("TIMER", _cell("timer_id")),
    Column("PID", _cell("pid"), justify="right"),
    Column("SCOPE", _text("scope_id"), text=True),
    Column("NODE", _text("node"), text=True),
    Column("DETAIL", lambda row: detail_text(row.get("detail") or {}), text=True),
)
JOB_COLUMNS = (
    Column("JOB", _text("job_id"), text=True),
    Column("UID", _cell("uid"), justify="right"),
    Column("WORLD", _cell("world_size"), justify="right"),
    Column("RANKS SEEN", _cell("ranks_seen"), justify="right"),
    Column("ACTIVE", _cell("active_timers"), justify="right"),
    Column("INCIDENTS", _cell("incidents"), justify="right"),
    Column("NODES", lambda row: ", ".join(row.get("nodes") or []) or "-", text=True),
    Column("LAST SEEN (UTC)", _time("last_seen")),
)
INCIDENT_COLUMNS = (
    Column("ID", _cell("id")),
    Column("JOB", _text("job_id"), text=True),
    Column("OPENED (UTC)", _time("opened_at")),
    Column("RANKS", lambda row: ranks_text(rank["rank"] for rank in row.get("ranks") or [])),
    Column("SUSPECTS", lambda row: ranks_text(row.get("suspects") or [])),
    Column("NODES", lambda row: ", ".join(row.get("nodes") or []) or "-", text=True),
    Column("SUMMARY", _text("summary"), text=True),
)
NODE_COLUMNS = (
    Column("NAME", _text("name"), text=True),
    Column("STATUS", lambda row: state_text(row["status"])),
    Column("ACTIVE", _cell("active_timers"), justify="right"),
    Column("VERSION", _text("version")),
    Column("LAST SEEN (UTC)", _time("last_seen")),
)

LISTINGS = (
    Listing(
        "timers",
        "/timers",
        "list timers, newest first",
        (
            Filter(
                "state",
                "only timers in this state",
                choices=tuple(state.value for state in TimerState),
            ),
            Filter("pid", "only the timers of this worker pid", int),
            Filter("scope", "only timers of this scope_id"),
            _JOB,
            Filter("rank", "only the timers of this rank", int),
            _NODE,
            Filter("restart_count", "only those armed after this many torchrun restarts", int),
        ),
        TIMER_COLUMNS,
    ),
    Listing(
        "events",
        "/events",
        "list the event log, newest first (--follow: tail it live)",
        (
            Filter("timer_id", "only the events of this timer", int),
            Filter(
                "kind", "only events of this kind", choices=tuple(kind.value for kind in EventKind)
            ),
            _NODE,
        ),
        EVENT_COLUMNS,
    ),
    Listing("jobs", "/jobs", "list jobs, newest activity first", (), JOB_COLUMNS),
    Listing(
        "incidents",
        "/incidents",
        "list incidents (hangs of a job, with suspects), newest first",
        (_JOB,),
        INCIDENT_COLUMNS,
    ),
    Listing(
        "nodes",
        "/nodes",
        "list the services sharing the database, up or down",
        (),
        NODE_COLUMNS,
        paged=False,
    ),
)


def add_listing_flags(parser: argparse.ArgumentParser, listing: Listing) -> None:
    filters = parser.add_argument_group("filters (those of GET " + listing.path + ")")
    for spec in listing.filters:
        filters.add_argument(
            spec.flag, dest=spec.param, type=spec.type, choices=spec.choices, help=spec.help
        )
    if listing.paged:
        filters.add_argument(
            "--limit", type=int, help="at most this many (the service's default: 100; max 1000)"
        )
        filters.add_argument("--cursor", help="the page after this one: the `next` a page gave")
    parser.add_argument("--json", action="store_true", help="print the service's JSON answer as is")


def list_page(
    listing: Listing, args: argparse.Namespace, connection: Connection, client: httpx.Client
) -> int:
    params = {spec.param: getattr(args, spec.param) for spec in listing.filters}
    if listing.paged:
        params |= {"limit": args.limit, "cursor": args.cursor}
    page = connection.get(client, listing.path, params)
    if args.json:
        print_json(page)
    else:
        print_page(listing.name, listing.columns, page)
    return 0


def print_page(name: str, columns: tuple[Column, ...], page: Mapping[str, Any]) -> None:
    """The page's rows as a table; on stderr, that there are none or more."""
    items = page.get("items") or []
    if items:
        console().print(table(columns, items))
    else:
        print(f"no {name} found", file=sys.stderr)
    if page.get("next"):
        print(printable(f"more: add --cursor {page['next']}"), file=sys.stderr)
