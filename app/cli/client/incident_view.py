"""``timer-service incident ID``: what hung and who is to blame, read top-down: the
summary, the ranks (suspects marked), each group's frames, and what the flight
recorders say of the collectives (which rank never entered which one)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import httpx
from rich.console import Console
from rich.text import Text

from app.cli.client.connection import Connection
from app.cli.client.safe_text import plain
from app.cli.client.showing import fields_table
from app.cli.client.tables import Column, console, ident, print_json, ranks_text, table, when

__all__ = ["show_incident"]

_OUTCOME_STYLES = {"killed": "bold red", "expired": "yellow", "captured": ""}


def show_incident(args: argparse.Namespace, connection: Connection, client: httpx.Client) -> int:
    incident = connection.get(client, f"/incidents/{args.incident_id}")
    if args.json:
        print_json(incident)
    else:
        print_incident(console(), incident)
    return 0


def print_incident(out: Console, incident: Mapping[str, Any]) -> None:
    suspects = set(incident.get("suspects") or [])
    rules = incident.get("suspect_rules") or {}
    out.print(
        fields_table(
            [
                ("incident", ident(incident["id"])),
                ("job", incident["job_id"]),
                ("opened", when(incident["opened_at"]) + " UTC"),
                ("nodes", ", ".join(incident.get("nodes") or []) or "-"),
                ("opened by", _trigger(incident)),
                ("suspects", _suspects(incident.get("suspects") or [], rules)),
                ("summary", plain(incident.get("summary") or "-", style="bold")),
            ]
        )
    )
    out.print()
    out.print(Text("Ranks", style="bold underline"))
    out.print(table(_rank_columns(suspects), incident.get("ranks") or []))
    out.print(
        plain(f"a rank's stack: timer-service stack TIMER --incident {incident['id']}", style="dim")
    )
    out.print()
    groups = incident.get("groups") or []
    if groups:
        out.print(Text("Groups (ranks whose stacks match)", style="bold underline"))
        for group in groups:
            ranks = group.get("ranks") or []
            marked = " (suspect)" if suspects & set(ranks) else ""
            heading = f"group {group['group']}: ranks {ranks_text(ranks)}{marked}"
            out.print(plain(heading, style="red" if marked else "bold"))
            frames = group.get("frames") or []
            for frame in frames:
                out.print(plain("    " + frame))
            if not frames:
                out.print(Text("    (frames hidden or none captured)", style="dim"))
        out.print()
    findings = incident.get("collective_findings") or []
    out.print(Text("Collective findings", style="bold underline"))
    if findings:
        out.print(table(_FINDING_COLUMNS, findings))
    else:
        out.print(Text("none (no flight recorder showed a collective some ranks missed)"))


def _trigger(incident: Mapping[str, Any]) -> str:
    timer_id = incident.get("trigger_timer_id")
    if timer_id is None:
        return "-"
    rank = next(
        (row.get("rank") for row in incident.get("ranks") or [] if row.get("timer_id") == timer_id),
        None,
    )
    of_rank = f" (rank {rank})" if rank is not None else ""
    return f"the expiry of timer {timer_id}{of_rank}"


def _suspects(suspects: list[int | None], rules: Mapping[str, str]) -> Text:
    if not suspects:
        return plain("none")
    # The rules are keyed by the rank as JSON keys it: "null" for one of unknown number.
    parts = [
        f"rank {ident(rank) if rank is not None else '?'} "
        f"(by the {rules.get('null' if rank is None else str(rank), '?')} rule)"
        for rank in suspects
    ]
    return plain(", ".join(parts), style="red")


def _rank_columns(suspects: set[int | None]) -> tuple[Column, ...]:
    return (
        Column(
            "RANK",
            lambda row: (
                plain(ident(row.get("rank")), style="bold red")
                if row.get("rank") in suspects
                else plain(ident(row.get("rank")))
            ),
            justify="right",
        ),
        Column("SUSPECT", lambda row: "yes" if row.get("rank") in suspects else ""),
        Column("NODE", lambda row: str(row.get("node") or "-"), text=True),
        Column("PID", lambda row: ident(row.get("pid")), justify="right"),
        Column("TIMER", lambda row: ident(row.get("timer_id"))),
        Column("OUTCOME", _outcome),
        Column("GROUP", lambda row: ident(row.get("group")), justify="right"),
        Column(
            "STACK BY",
            lambda row: str(row.get("method") or row.get("stack_note") or "-"),
            text=True,
        ),
    )


def _outcome(row: Mapping[str, Any]) -> Text:
    outcome = str(row.get("outcome") or "-")
    return plain(outcome, style=_OUTCOME_STYLES.get(outcome, ""))


def _mismatch(finding: Mapping[str, Any]) -> str:
    mismatch = finding.get("mismatch")
    if not mismatch:
        return "-"
    values = "; ".join(
        f"{value['value']} on {ranks_text(value['ranks'])}" for value in mismatch["values"]
    )
    return f"{mismatch['field']}: {values}"


_FINDING_COLUMNS = (
    Column("GROUP", lambda row: f"{row['pg']} {row.get('desc') or ''}".strip(), text=True),
    Column("OP", lambda row: str(row.get("op") or "-")),
    Column("SEQ", lambda row: ident(row.get("seq")), justify="right"),
    Column("RANKS", lambda row: ranks_text(row.get("ranks") or [])),
    Column("MISSING", lambda row: plain(ranks_text(row.get("missing") or []), style="red")),
    Column("MISMATCH", _mismatch, text=True),
)
