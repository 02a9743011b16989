"""The job page's scopes (contract 12): each scope's hold times and suggested timeout,
and, for the scope the page was asked about, what a proposed timeout would have done
to the recorded history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from app.db import scope_stats

__all__ = ["SCOPES_SHOWN", "scopes_view"]

# The job's scopes released most recently: a job times a handful of them.
SCOPES_SHOWN = 50


def scopes_view(
    connection: Connection,
    job_id: str,
    owner: int,
    floor: float,
    whatif_scope: str | None,
    whatif_timeout: float | None,
) -> dict[str, Any]:
    """``rows``: the statistics of the scopes of the job ``job_id`` of ``owner`` (a
    uid, or UNKNOWN_OWNER); ``whatif``: the replay of ``whatif_timeout`` over
    ``whatif_scope``'s history, when both are given."""
    scopes = scope_stats.scope_stats(
        connection, job_id, owner, None, scope_stats.DEFAULT_WINDOW, floor, SCOPES_SHOWN
    )
    whatif = None
    if whatif_scope is not None and whatif_timeout is not None:
        replay = scope_stats.what_if(connection, job_id, owner, whatif_scope, whatif_timeout)
        whatif = {"scope_id": whatif_scope, **replay.model_dump()}
    return {"rows": [item.model_dump() for item in scopes.items], "whatif": whatif}
