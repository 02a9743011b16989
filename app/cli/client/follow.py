"""``timer-service events --follow``: the newest events, then each new one as it is
recorded, until Ctrl-C (exit 0).

It polls ``GET /events?after=ID`` (oldest first). Ids are given as rows are inserted,
but a fleet's nodes commit to one database side by side: an event with a smaller id
may become visible after a larger one (PostgreSQL), and an id may never be used (a
rolled-back insert). So the tail asks again from the last id below which it has seen
every event (``EventTail.after``) and skips those it printed. An id missing below a
printed one is waited for ``SETTLE_SECONDS``, then taken as never coming; memory holds
only the ids printed in that window (at most ``MAX_PENDING``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from rich.console import Console

from app.cli.client.connection import Connection
from app.cli.client.exits import ClientError, ExitCode
from app.cli.client.safe_text import plain, printable, safe_json
from app.cli.client.tables import console, detail_text, kind_text, when

__all__ = ["MAX_PENDING", "SETTLE_SECONDS", "EventTail", "follow_events"]

SETTLE_SECONDS = 10.0
MAX_PENDING = 100_000
POLL_SECONDS = 0.5
RETRY_SECONDS = 2.0
PAGE_LIMIT = 1000  # the most GET /events gives at once
BACKLOG = 10  # events shown before the new ones, unless --limit says how many


class EventTail:
    """Which events of the log were printed, so that none is printed twice or skipped."""

    def __init__(
        self,
        after: int,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Every event with an id up to ``after`` was printed, or is taken as never coming.
        self.after = after
        self._settle_seconds = settle_seconds
        self._max_pending = max_pending
        self._clock = clock
        # Ids printed above ``after``, with when each was first seen.
        self._pending: dict[int, float] = {}

    def take(self, events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Those of ``events`` not printed before (to print now), in the order given."""
        now = self._clock()
        new = []
        for event in events:
            event_id = int(event["id"])
            if event_id > self.after and event_id not in self._pending:
                self._pending[event_id] = now
                new.append(event)
        return new

    def settle(self) -> None:
        """Move ``after`` past what need not be asked for again: an unbroken run of
        printed ids, and any id printed ``settle_seconds`` ago or more (a gap below it
        by now is an id never used); past the oldest when too many are pending."""
        now = self._clock()
        settled = None
        # In the order first seen (take adds them so): the settled ones come first.
        for event_id, seen in self._pending.items():
            if now - seen < self._settle_seconds:
                break
            settled = event_id if settled is None else max(settled, event_id)
        if settled is not None:
            self._drop_through(settled)
        if len(self._pending) > self._max_pending:
            by_id = sorted(self._pending)
            self._drop_through(by_id[len(by_id) - self._max_pending])
        while self.after + 1 in self._pending:
            self.after += 1
            del self._pending[self.after]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _drop_through(self, event_id: int) -> None:
        self.after = max(self.after, event_id)
        self._pending = {i: seen for i, seen in self._pending.items() if i > self.after}


def follow_events(
    args: argparse.Namespace,
    connection: Connection,
    client: httpx.Client,
    filters: Mapping[str, Any],
) -> int:
    out = console()
    show: Callable[[Mapping[str, Any]], None] = (
        _json_line if args.json else lambda event: _event_line(out, event)
    )
    try:
        tail = _backlog(connection, client, filters, args.limit, show)
        down = False
        while True:
            try:
                _poll(connection, client, filters, tail, show)
            except ClientError as error:
                if error.code not in (ExitCode.UNREACHABLE, ExitCode.SERVICE_ERROR):
                    raise
                if not down:
                    said = printable(error.message)
                    print(f"{said}; retrying every {RETRY_SECONDS:g} s", file=sys.stderr)
                down = True
                time.sleep(RETRY_SECONDS)
                continue
            if down:
                print(f"the service at {connection.target} answers again", file=sys.stderr)
                down = False
            tail.settle()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return 0


def _backlog(
    connection: Connection,
    client: httpx.Client,
    filters: Mapping[str, Any],
    limit: int | None,
    show: Callable[[Mapping[str, Any]], None],
) -> EventTail:
    """The tail, after showing the newest ``limit`` events (oldest first)."""
    shown = BACKLOG if limit is None else limit
    page = connection.get(client, "/events", {**filters, "limit": max(shown, 1)})
    newest_first = page["items"]
    if shown == 0:
        return EventTail(int(newest_first[0]["id"]) if newest_first else 0)
    # From just below the oldest shown: one committed late among them is still seen.
    tail = EventTail(int(newest_first[-1]["id"]) - 1 if newest_first else 0)
    for event in tail.take(reversed(newest_first)):
        show(event)
    return tail


def _poll(
    connection: Connection,
    client: httpx.Client,
    filters: Mapping[str, Any],
    tail: EventTail,
    show: Callable[[Mapping[str, Any]], None],
) -> None:
    """Every event recorded after ``tail.after``, a page at a time, each shown once."""
    after = tail.after
    while True:
        page = connection.get(client, "/events", {**filters, "after": after, "limit": PAGE_LIMIT})
        for event in tail.take(page["items"]):
            show(event)
        if not page.get("next"):
            return
        after = int(page["next"])


def _json_line(event: Mapping[str, Any]) -> None:
    # One REST event a line (JSON Lines), as the service answered it.
    sys.stdout.write(safe_json(event) + "\n")
    sys.stdout.flush()


def _event_line(out: Console, event: Mapping[str, Any]) -> None:
    line = plain(f"{when(event['at'])}  ")
    line.append_text(kind_text(f"{event['kind']:<11}"))
    timer = event.get("timer_id")
    rest = f"  timer {timer if timer is not None else '-'}  pid {event['pid']}"
    rest += f"  scope {event['scope_id']}  node {event.get('node') or '-'}"
    detail = detail_text(event.get("detail") or {})
    if detail:
        rest += f"  {detail}"
    line.append_text(plain(rest))
    out.print(line, soft_wrap=True)
    sys.stdout.flush()
