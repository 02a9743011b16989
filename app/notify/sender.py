"""The outbox's sending side: a thread that fans each new notification out to the
channels that want it (one delivery each), then sends the deliveries that are due.

- **Once per fleet.** Nodes sharing a PostgreSQL database all run a sender. Each takes
  rows with ``FOR UPDATE SKIP LOCKED`` (a row another node holds is skipped, not
  waited for) and writes a lease on a delivery before sending it: the node that holds
  an unexpired lease is the only one that sends. A node that dies mid-send leaves its
  lease to run out, then another node sends the delivery, with the same delivery id
  (receivers drop the repeat). SQLite serves one node (the service lock), so there
  the lease would only survive a restart: a node's new process (which holds the
  node's service lock, so its predecessor is dead) frees its predecessor's leases at
  start (``release_own_leases``).
- **Retries.** A failure that may pass (a timeout, a refused connection, a 5xx, 429) is
  tried again after ``backoff_base * 2**(attempts-1)`` seconds (capped, jittered); after
  ``max_attempts`` tries or ``max_age`` seconds it is ``gave_up``. A refusal that will
  not pass (a 4xx) is ``failed`` at once.
- **Woken, and polling slowly.** This node's recorder wakes the sender after each
  commit that wrote a notification, so its own news goes at once; a poll each second
  (``poll``) finds the rest: retries come due, another node's notifications, a dead
  node's lease run out. An idle service asks its database two small questions a second.
- **Never in the way.** Sends run on a small pool of daemon threads, each send bounded
  as a whole by ``send_limit`` (below the lease, so no other node takes a delivery
  over while it is still being sent); the loop claims only as many as the pool has
  room for, so one dead channel holds at most its own sends, never a kill, the
  recorder or other channels for long. The Alertmanager push has a thread of its own,
  so a slow Alertmanager holds back no channel, and no thread holds the exit.

Single steps (``fan_out``, ``claim``, ``send_claimed``) are public so tests drive them
with no thread and no sleeps.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from typing import Protocol

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from app import log_names
from app.db.database_status import one_line
from app.notify import claims
from app.notify.claims import Claimed
from app.notify.delivery import Deliver, deliver
from app.notify.notification_body import notification_body
from app.notify.send_pool import SendPool
from app.notify.silences import silenced_by
from app.notify.webhook import SEND_LIMIT, Outcome

__all__ = ["Pushing", "Sender"]

logger = logging.getLogger(log_names.NOTIFICATIONS)

STATES = ("delivered", "failed", "gave_up", "silenced")

_PRUNE_INTERVAL = 3600.0
# timer_notification_queue's age is measured this often (its alert waits minutes).
_MEASURE_INTERVAL = 5.0


class Checking(Protocol):
    """Conditions that write their own notifications (``app.notify.conditions``)."""

    def check(self) -> bool: ...


class Pushing(Protocol):
    """Alerts kept up to date elsewhere (``app.notify.alertmanager``)."""

    def due(self, news: bool) -> bool: ...

    def push(self) -> bool: ...


class Sender:
    def __init__(
        self,
        engine: Engine,
        node: str,
        base_url: str,
        *,
        lease: float = 60.0,
        max_attempts: int = 10,
        max_age: float = 24 * 3600.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 600.0,
        poll: float = 1.0,
        workers: int = 4,
        retention_seconds: float | None = None,
        send: Deliver = deliver,
    ) -> None:
        self._engine = engine
        self.node = node
        self.base_url = base_url.rstrip("/")
        self.lease = lease
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.poll = poll
        self._send = send
        # A whole send ends well inside its lease (with room to write its outcome).
        self.send_limit = min(SEND_LIMIT, 0.8 * lease)
        self._workers = workers
        # Sends claimed at once: the pool's threads, and as many waiting their turn.
        self._capacity = 2 * workers
        self._pool: SendPool | None = None
        self._in_flight: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._retention = retention_seconds
        self._next_prune = time.monotonic() + _PRUNE_INTERVAL
        self._next_measure = 0.0
        self._changed = False
        # Whether the last claim was cut short by the room left (so more may be due).
        self._backlog = False
        self.outcomes = dict.fromkeys(STATES, 0)
        # Seconds the oldest notification or delivery not yet done has waited (0: none).
        self.queue_age = 0.0
        # --alertmanager-url: pushed at news and every half minute, on its own thread.
        self.alertmanager: Pushing | None = None
        # Nodes down, overdue kills: looked at from this thread, never the kill path's.
        self.conditions: Checking | None = None
        self._alerts_due = threading.Event()
        self._alerts_thread: threading.Thread | None = None

    # ---- the thread -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stopping.clear()
        self._pool = SendPool(self._workers, "timer-notify-send")
        self._wake.set()  # a first round at once: what a restart left is sent now
        self._thread = threading.Thread(target=self._run, name="timer-notify", daemon=True)
        self._thread.start()
        if self.alertmanager is not None:
            self._alerts_thread = threading.Thread(
                target=self._push_alerts, name="timer-alertmanager", daemon=True
            )
            self._alerts_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; sends under way finish (each is bounded by its timeout) or are
        left to their lease, and another start (or node) sends them."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._alerts_due.set()
        self._alerts_thread = None  # a push under way ends by its own limit; not waited for

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                busy = [future for future in self._in_flight if not future.done()]
            if len(busy) >= self._capacity:
                # Full: the next round when a send ends (or at the poll).
                concurrent.futures.wait(
                    busy, self.poll, return_when=concurrent.futures.FIRST_COMPLETED
                )
            elif self._backlog:
                pass  # room, and the last claim took all it could: more may be due now
            else:
                # Room: the next round at news (a commit that wrote a notification, a
                # stop) or at the poll. Cleared before the round reads, so a wake
                # during it is not lost.
                self._wake.wait(self.poll)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._round()
            except SQLAlchemyError as error:
                # The service says once per outage that the database is away (contract
                # 14); a sender cut off from it alone shows in timer_notification_queue
                # (alert TimerNotificationsStuck). Retried at this pace, quietly.
                logger.debug("notifications: the database failed (%s); retrying", one_line(error))
                self._stopping.wait(1.0)
            except Exception:
                logger.exception("notification sender error; continuing")
                self._stopping.wait(1.0)

    def _round(self) -> None:
        if self.conditions is not None:
            try:
                self.conditions.check()  # written before the fan-out, so sent this round
            except SQLAlchemyError:
                raise  # the database: this round is retried as a whole
            except Exception:  # a flaw in one check never stops the sending
                logger.exception("notifications: checking nodes and kills failed")
        news = self.fan_out() > 0
        if self.alertmanager is not None and self.alertmanager.due(news):
            self._alerts_due.set()  # pushed on its own thread, never in this loop's way
        with self._lock:
            before = len(self._in_flight)
            self._in_flight = {future for future in self._in_flight if not future.done()}
            room = self._capacity - len(self._in_flight)
            # Something was written or sent: the queue's age is measured again once
            # the sends under way are done (not on every one of a burst's rounds).
            self._changed |= news or len(self._in_flight) < before
        self._backlog = False
        if room > 0 and self._pool is not None:
            taken = self.claim(room)
            self._backlog = len(taken) == room
            for claimed in taken:
                future = self._pool.submit(self._send_one, claimed)
                with self._lock:
                    self._in_flight.add(future)
        now = time.monotonic()
        settled = self._changed and not self._in_flight
        if settled or now >= self._next_measure:
            self._next_measure = now + _MEASURE_INTERVAL
            self._changed = False
            self.measure()
        if self._retention is not None and now >= self._next_prune:
            self._next_prune = now + _PRUNE_INTERVAL
            self.prune(time.time() - self._retention)

    def _push_alerts(self) -> None:
        """The Alertmanager push, each time the loop finds it due (news wakes it again
        during a push, so none is lost); each push ends within the send limit."""
        while True:
            self._alerts_due.wait()
            self._alerts_due.clear()
            if self._stopping.is_set() or self.alertmanager is None:
                return
            try:
                self.alertmanager.push()
            except Exception:
                logger.exception("Alertmanager push error; continuing")
                self._stopping.wait(1.0)

    # ---- single steps -----------------------------------------------------------------

    def step(self) -> int:
        """Fan out, then claim and send every due delivery on this thread: how many
        were sent (tests, and the benchmark)."""
        self.fan_out()
        claimed = self.claim(1000)
        self.send_claimed(claimed)
        return len(claimed)

    def fan_out(self) -> int:
        """One delivery per new notification and channel that wants it; how many
        notifications were fanned out."""
        return claims.fan_out(self._engine)

    def claim(self, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries to this node (``claims.claim``)."""
        return claims.claim(self._engine, self.node, self.lease, limit)

    def release_own_leases(self) -> int:
        """Free the leases this node's previous process held, so what it was sending
        when it died goes now, not when the lease runs out; how many. Only for a process
        that holds its node's service lock: then no other live process has its name.
        Those sends may have reached their receiver: they go again with the same
        delivery id, which receivers drop."""
        freed = claims.release_leases(self._engine, self.node)
        if freed:
            logger.warning(
                "%d notifications this node was sending when it stopped are sent again", freed
            )
        return freed

    def send_claimed(self, claimed: list[Claimed]) -> None:
        for one in claimed:
            self._send_one(one)

    def _send_one(self, claimed: Claimed) -> None:
        try:
            held = self._held(claimed)
            if held is not None:
                self._finish(claimed, "silenced", held, count_attempt=False)
                return
            if claimed.channel_id is None:
                self._finish(claimed, "failed", "the channel was deleted", count_attempt=False)
                return
            body = notification_body(claimed.notification, self.base_url)
            outcome = self._send(
                claimed.url, claimed.secret, claimed.delivery_id, body, self.send_limit
            )
        except SQLAlchemyError:
            logger.exception("notification %s: could not be checked", claimed.delivery_id)
            return  # its lease runs out; sent later
        except Exception as error:  # a flaw in one channel's sending fails that one only
            logger.exception(
                "delivery %s to channel %d failed", claimed.delivery_id, claimed.channel_id or 0
            )
            outcome = Outcome(False, f"internal error: {type(error).__name__}")
        self._record(claimed, outcome)

    def _held(self, claimed: Claimed) -> str | None:
        """The silence that holds ``claimed`` back, checked as it is about to go."""
        with self._engine.connect() as connection:
            return silenced_by(connection, claimed.notification)

    def _record(self, claimed: Claimed, outcome: Outcome) -> None:
        if outcome.delivered:
            self._finish(claimed, "delivered", None)
            return
        attempts = claimed.attempts + 1
        too_old = time.time() - claimed.created_at >= self.max_age
        if not outcome.retry:
            state = "failed"
        elif attempts >= self.max_attempts or too_old:
            state = "gave_up"
        else:
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempts - 1))
            delay *= random.uniform(0.8, 1.2)
            self._update(claimed, "pending", outcome.error, attempts, time.time() + delay)
            return
        logger.warning(
            "delivery %s to channel %d (%s) %s after %d attempts: %s",
            claimed.delivery_id,
            claimed.channel_id or 0,
            claimed.channel_name,
            state,
            attempts,
            outcome.error,
        )
        self._finish(claimed, state, outcome.error)

    def _finish(
        self, claimed: Claimed, state: str, error: str | None, *, count_attempt: bool = True
    ) -> None:
        attempts = claimed.attempts + (1 if count_attempt else 0)
        if self._update(claimed, state, error, attempts, None):
            with self._lock:
                self.outcomes[state] += 1

    def _update(
        self, claimed: Claimed, state: str, error: str | None, attempts: int, next_at: float | None
    ) -> bool:
        """Write the outcome, if this node still holds the lease (else another node took
        the delivery over, and its outcome stands)."""
        now = time.time()
        with self._engine.begin() as connection:
            done = connection.execute(
                text(
                    "UPDATE deliveries SET state = :state, attempts = :attempts,"
                    " last_error = :error, next_at = :next_at, finished_at = :finished,"
                    " lease_until = NULL, leased_by = NULL"
                    " WHERE id = :id AND leased_by = :lease"
                ),
                {
                    "state": state,
                    "attempts": attempts,
                    "error": error,
                    "next_at": next_at if next_at is not None else now,
                    "finished": None if state == "pending" else now,
                    "id": claimed.id,
                    "lease": claimed.lease,
                },
            ).rowcount
        if not done:
            logger.warning(
                "delivery %s: its lease ran out during the send; another node has it",
                claimed.delivery_id,
            )
        return bool(done)

    def measure(self) -> None:
        """``queue_age``: how long the oldest notification or delivery not done yet has
        waited (``timer_notification_queue``)."""
        with self._engine.connect() as connection:
            oldest = connection.execute(
                text(
                    "SELECT min(t) FROM (SELECT min(created_at) AS t FROM deliveries"
                    " WHERE state = 'pending' UNION ALL SELECT min(at) AS t FROM"
                    " notifications WHERE fanned_out = :no) AS waiting"
                ),
                {"no": False},
            ).scalar()
        self.queue_age = 0.0 if oldest is None else max(0.0, time.time() - float(oldest))

    def prune(self, cutoff: float) -> None:
        """Forget deliveries done before ``cutoff``, notifications left with none, and
        silences over before it (the history's retention, --retention-days)."""
        with self._engine.begin() as connection:
            connection.execute(
                text("DELETE FROM deliveries WHERE state != 'pending' AND created_at < :cutoff"),
                {"cutoff": cutoff},
            )
            connection.execute(
                text(
                    "DELETE FROM notifications WHERE fanned_out = :yes AND at < :cutoff AND"
                    " NOT EXISTS (SELECT 1 FROM deliveries WHERE"
                    " deliveries.notification_id = notifications.id)"
                ),
                {"yes": True, "cutoff": cutoff},
            )
            connection.execute(
                text("DELETE FROM silences WHERE ends_at < :cutoff"), {"cutoff": cutoff}
            )
