"""How a write is answered (contract 14): 201 or 200 once its events are committed,
202 once it is clear they cannot be yet.

A write is applied to the engine before it is answered, whatever the database does:
the timer is armed, moved or released, and its events wait in the recorder's buffer
until the database takes them. So while the database cannot be written, waiting for
the commit only blocks the worker's training step for nothing, and a 503 would say
the write failed when it did not. The answer is then 202, ``{"timer": ...,
"recorded": false}``, at once: when the database is known to be away (the probe, a
failed batch), or when the batch in flight has waited longer than ``WRITE_PATIENCE``
(a server that hangs refuses nothing). Without either, a write waits for its commit up
to ``--commit-timeout`` and, past it, is answered 202 too: still applied, still to be
written.
"""

from __future__ import annotations

import json
import time
from typing import Protocol

from fastapi import Response, status

from app.db.models import TimerPublic

__all__ = ["RETRY_AFTER_SECONDS", "WRITE_PATIENCE", "Recording", "answer", "wait_recorded"]

# A batch waiting this long means a database that does not answer, for a write that
# must be answered within a second (a healthy batch takes milliseconds).
WRITE_PATIENCE = 0.5
# How often a waiting write looks again at whether the database went away meanwhile:
# a hang is seen within WRITE_PATIENCE plus this (0.6 s), leaving a loaded machine
# room within the second a write must be answered in.
_LOOK_AGAIN = 0.1
# When a client may look again (a 202's events are written when the database returns).
RETRY_AFTER_SECONDS = 5


class Recording(Protocol):
    """What a write's answer asks of the service (``app.service.Service``)."""

    @property
    def commit_timeout(self) -> float: ...

    def last_seq(self) -> int: ...

    async def committed(self, seq: int, timeout: float) -> bool: ...

    def unwritable(self, patience: float) -> str | None: ...


async def wait_recorded(service: Recording) -> str | None:
    """Wait until every event so far (the request's own included) is committed: None.
    Otherwise why it is not yet, as soon as that is known."""
    seq = service.last_seq()
    timeout = service.commit_timeout
    deadline = time.monotonic() + timeout
    while not await service.committed(seq, 0):
        problem = service.unwritable(WRITE_PATIENCE)
        if problem is not None:
            return problem
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"not committed within {timeout:g} s: the recorder is behind"
        if await service.committed(seq, min(remaining, _LOOK_AGAIN)):
            return None
    return None


def answer(
    timer: TimerPublic,
    status_code: int,
    *,
    not_recorded: str | None,
    done: str,
) -> Response:
    """The timer, as ``status_code`` once recorded; else a 202 saying what was ``done``
    (``"the timer is armed"``) and why it is not recorded yet."""
    if not_recorded is None:
        # Encoded once, as FastAPI would for ``response_model`` (which would validate
        # the model again first).
        return Response(timer.model_dump_json(), status_code, media_type="application/json")
    body = {
        "timer": timer.model_dump(mode="json"),
        "recorded": False,
        "detail": f"{done}; not recorded yet ({not_recorded}). Its events are kept and "
        "written when the database takes them: there is nothing to retry.",
    }
    return Response(
        json.dumps(body),
        status.HTTP_202_ACCEPTED,
        media_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
