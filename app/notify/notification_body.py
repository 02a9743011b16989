"""A notification's body (contract 11): the webhook's JSON, whose ``summary`` is also
the library channels' text and the Alertmanager alert's annotation, so every channel
tells the same thing. ``row`` is the notification as the sender claims it, joined
with its incident."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

__all__ = ["notification_body"]


# The service's own conditions (app.notify.conditions), and where each is read.
_CONDITIONS = {"node_down": "/ui", "loss": "/losses", "overdue": "/healthz"}


def _counted(count: Any, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _condition_summary(kind: str, node: str, detail: dict[str, Any]) -> str:
    if kind == "node_down":
        silent = float(detail.get("timeout") or 0)
        last = time.gmtime(float(detail.get("last_seen") or 0))
        return (
            f"node {node} is down: no heartbeat for over {silent:g}s (the last at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', last)} UTC); the timers of its workers "
            "are not watched until its service is back"
        )
    if kind == "loss":
        return (
            f"node {node} lost {_counted(detail.get('lost'), 'event')} "
            f"({detail.get('detail')}); GET /losses says which, POST /losses/acknowledge "
            "once read"
        )
    return (
        f"node {node}: {_counted(detail.get('count'), 'due kill')} not sent within "
        f"{float(detail.get('allowance') or 0):g}s of their deadline (the oldest "
        f"{float(detail.get('oldest_seconds') or 0):.1f}s past it); see /healthz"
    )


def notification_body(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The webhook's JSON (contract 11): ``{id, kind, at, node, job_id, summary, url,
    timer?, incident?}``; ``row`` is the notification joined with its incident."""
    stored = json.loads(row["body"])
    timer = stored.get("timer") or {}
    body: dict[str, Any] = {
        "id": row["id"],
        "kind": row["kind"],
        "at": row["at"],
        "node": row["node"],
        "job_id": row["job_id"],
        "summary": "",
        "url": base_url,
        "timer": timer or None,
    }
    if row["kind"] == "incident" and row.get("incident_id") is not None:
        folded = int(row.get("folded") or 0)
        body["url"] = f"{base_url}/ui/incidents/{row['incident_id']}"
        body["incident"] = {
            "id": row["incident_id"],
            "opened_at": row.get("opened_at"),
            "nodes": json.loads(row["nodes"]) if row.get("nodes") else [],
            "suspects": json.loads(row["suspects"]) if row.get("suspects") else [],
            "events_folded": folded,
        }
        summary = row.get("summary") or "its ranks are being analysed"
        body["summary"] = f"job {row['job_id']} hung on {row['node']}: {summary}"
        return body
    if timer.get("id") is not None:
        body["url"] = f"{base_url}/ui/timers/{timer['id']}"
    rank = f" (rank {timer['rank']} of job {timer['job_id']})" if timer.get("job_id") else ""
    if row["kind"] == "unkillable":
        detail = stored.get("detail") or {}
        where = f" in {detail['wchan']}" if detail.get("wchan") else ""
        body["summary"] = (
            f"pid {timer.get('pid')}{rank} on {row['node']} survived its SIGKILL for "
            f"{float(detail.get('seconds') or 0):.0f}s: state {detail.get('state') or '?'}{where}"
        )
        if detail.get("exited"):
            after = float(detail.get("exited_after") or 0)
            body["summary"] += f"; it exited {after:.0f}s after the SIGKILL"
        return body
    if row["kind"] in _CONDITIONS:
        detail = stored.get("detail") or {}
        body["url"] = f"{base_url}{_CONDITIONS[row['kind']]}"
        body["summary"] = _condition_summary(row["kind"], row["node"], detail)
        return body
    if row["kind"] == "straggler":
        detail = stored.get("detail") or {}
        if timer.get("job_id") is not None:
            body["url"] = f"{base_url}/ui/jobs/{quote(str(timer['job_id']), safe='')}"
        body["summary"] = (
            f"rank {timer.get('rank')} of job {timer.get('job_id')} on {row['node']} is "
            f"{float(detail.get('slowdown') or 0):.2f}x slower than the other ranks at scope "
            f"{timer.get('scope_id')!r} (its last {detail.get('window')} holds)"
        )
        return body
    body["summary"] = (
        f"killed pid {timer.get('pid')}{rank} on {row['node']}: scope "
        f"{timer.get('scope_id')!r} passed its deadline"
    )
    over = stored.get("over_rate")
    if over:
        # The outbox's fold of one uid's kills past its rate (app.notify.outbox).
        body["summary"] = (
            f"uid {over.get('uid')} had more than {over.get('limit')} kills in a minute on "
            f"{row['node']}: the rest of that minute's are told here as one, "
            f"{1 + int(row.get('folded') or 0)} so far; the first: {body['summary']}"
        )
    return body
