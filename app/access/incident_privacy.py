"""What of an incident a caller may see (contract 7).

An incident's group frames and its summary are read off its ranks' stacks, and a
stack shows what another user's program is doing. So a caller who may not read the
stack of every captured rank (``authorize`` refuses one of their owners) gets the
incident with its frames emptied and its summary replaced by a sentence saying why.
Who hung and with whom stays: the ranks, their groups and the suspects say which
process to look at, not what it was running. The API and the pages both answer
through here, so they cannot disagree.

The ranks' flight recorders (``collectives``) and the collective findings are hidden
alike, though they name no file or function: a group's description is text the
worker chose (``new_group(group_desc=...)``), and the ops, tensor sizes and dtypes of
every step say what the program computes (the model's layers and widths). Which rule
named each suspect (``suspect_rules``) stays, as the suspects do.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.access.callers import Caller, authorize
from app.db.job_models import IncidentPublic
from app.db.job_store import IncidentRow

__all__ = ["frames_hidden_because", "hidden_on_page", "may_read_stack", "visible"]

_ACTION = "read its stack"


def may_read_stack(caller: Caller, owner: int | None) -> bool:
    """Whether ``caller`` may read a stack of ``owner`` (a uid): what
    ``GET /incidents/{id}/captures/{capture_id}/stack`` answers with 200 rather than 403,
    so a page links only the stacks its reader can open."""
    return authorize(caller, owner, _ACTION) is None


def _refused(caller: Caller, owners: Iterable[int | None]) -> set[int | None]:
    return {uid for uid in owners if not may_read_stack(caller, uid)}


def _named(refused: set[int | None]) -> list[str]:
    named = sorted(f"uid {uid}" for uid in refused if uid is not None)
    if None in refused:
        named.append("an unknown user")
    return named


def frames_hidden_because(caller: Caller, owners: Iterable[int | None]) -> str | None:
    """The summary shown instead when ``caller`` may not read every stack of ``owners``
    (their uids), or None when it may."""
    refused = _refused(caller, owners)
    if not refused:
        return None
    if caller.uid is None:
        return (
            "frames hidden: the service cannot tell who you are; connect over loopback TCP "
            "or the Unix socket (--uds), or send the admin token"
        )
    return (
        f"frames hidden: ranks belong to {', '.join(_named(refused))}; only a stack's owner, "
        "root, the service's user or the admin token may read it"
    )


def hidden_on_page(caller: Caller, owners: Iterable[int | None]) -> str | None:
    """What an incident's page says in place of its summary when ``caller`` may not
    read every stack of ``owners``, or None when it may. Plain words for a reader, who
    sees the reason once here and nowhere a pointer to what is hidden too."""
    refused = _refused(caller, owners)
    if not refused:
        return None
    if caller.uid is None:
        return (
            "Stacks are visible to the job's owner and admins, and the service cannot tell "
            "who you are, so this incident's summary, frames and collectives are hidden: "
            "connect over loopback TCP or the Unix socket (--uds), or send the admin token."
        )
    return (
        f"Stacks are visible to the job's owner ({', '.join(_named(refused))}) and admins "
        "(root, the service's user, the admin token): this incident's summary, frames "
        "and collectives, read off those stacks, are hidden from you."
    )


def visible(caller: Caller, row: IncidentRow) -> IncidentPublic:
    """``row`` as ``caller`` may see it."""
    reason = frames_hidden_because(caller, row.owners)
    if reason is None:
        return row.public
    groups = [group.model_copy(update={"frames": []}) for group in row.public.groups]
    ranks = [rank.model_copy(update={"collectives": None}) for rank in row.public.ranks]
    return row.public.model_copy(
        update={"groups": groups, "summary": reason, "ranks": ranks, "collective_findings": []}
    )
