"""``"expires_in": "auto"`` (contract 12): the timeout a request that lets the service
choose is armed with, from what the scope's healthy holds say (app.db.learned_timeouts).

The scope's history is its job's: the job the request names, else the one the worker's
environment names (TORCHELASTIC_RUN_ID, as the engine labels the timer), read once per
worker while the engine holds a timer of it; and only the holds of the worker's own
uid, the owner its timer is recorded with (a job id is any string a worker chose:
another user's timers labelled with it must not set this worker's timeout). The
environment of a process is read only for a caller that may act on it (its owner,
root, the service's uid, the admin token), as the engine reads it: anyone else's
request is refused by the engine anyway. Nothing here waits long: the database gets
``ASK_SECONDS``, the worker's environment as long; past it, the timer is armed with the
last timeout learned for the scope, or the initial one."""

from __future__ import annotations

import asyncio
import os

from starlette.concurrency import run_in_threadpool

from app.access.callers import Caller, is_privileged
from app.db.database_status import DATABASE_ERRORS
from app.db.learned_timeouts import ASK_SECONDS, Choice, LearnedTimeouts
from app.db.models import TimerCreate
from timer_core import Reaper
from timer_core.engine import read_labels
from timer_core.engine.process import identify

__all__ = ["auto_timeout"]


async def auto_timeout(
    learned: LearnedTimeouts,
    database_away: bool,
    timers: Reaper,
    body: TimerCreate,
    now: float,
    caller: Caller,
) -> Choice:
    """The timeout for ``body``, an "auto" request of ``caller``; ``now`` is monotonic
    seconds."""
    if not _may_act(caller, body.pid):
        # The engine refuses it (no such process, or another user's): a flood of these
        # costs no database question and no read of anyone's environment.
        return learned.initial
    owner = await _owner_of(timers, body.pid, caller)
    if owner is None:
        return learned.initial
    job = body.job_id if body.job_id is not None else await _job_of(timers, body.pid, caller)
    scope = body.scope_id
    choice = learned.cached(owner, job, scope, now)
    if choice is not None:
        return choice
    if database_away:
        return learned.fallback(owner, job, scope)
    try:
        return await asyncio.wait_for(
            run_in_threadpool(learned.look_up, owner, job, scope, now), ASK_SECONDS
        )
    except (TimeoutError, *DATABASE_ERRORS):
        return learned.fallback(owner, job, scope)


async def _owner_of(timers: Reaper, pid: int, caller: Caller) -> int | None:
    """The real uid the worker's timer will be recorded with: as the engine knows it,
    else the caller's own (an unprivileged caller may arm only its own processes), else
    read as the engine reads it, on a thread, bounded. None if it cannot be told."""
    known = timers.book.known_identity(pid)
    if known is not None:
        return known.uid
    if not is_privileged(caller):
        return caller.uid
    try:
        identity = await asyncio.wait_for(run_in_threadpool(identify, pid), ASK_SECONDS)
    except TimeoutError:
        return None
    return None if identity is None else identity.uid


async def _job_of(timers: Reaper, pid: int, caller: Caller) -> str | None:
    """The job the worker's environment names, as the engine knows it or reads it."""
    known = timers.book.known_identity(pid)
    if known is not None:
        return known.labels.job_id
    if not _may_act(caller, pid):
        return None
    try:
        # /proc/PID/environ can wait on the worker's memory map: on a thread, bounded.
        labels = await asyncio.wait_for(run_in_threadpool(read_labels, pid), ASK_SECONDS)
    except TimeoutError:
        return None
    return labels.job_id


def _may_act(caller: Caller, pid: int) -> bool:
    """Whether ``caller`` may arm a timer for ``pid``, as far as a stat can tell: the
    engine decides (by the real uid; a setuid worker's /proc directory is its effective
    uid's, so its owner's "auto" request gets the initial timeout)."""
    if is_privileged(caller):
        return True
    return caller.uid is not None and _owner(pid) == caller.uid


def _owner(pid: int) -> int | None:
    """Who owns process ``pid`` (its /proc directory: a stat, which never waits on the
    process), or None if there is no such process."""
    try:
        return os.stat(f"/proc/{pid}").st_uid if pid > 0 else None
    except (OSError, ValueError):
        return None
