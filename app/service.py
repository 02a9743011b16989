"""The running service: the parts every service has (the database and its recorder,
the HTTP limits, health and metrics), started and stopped together by the app's
lifespan, and what it keeps of timers: a worker's node (``app.worker_node``) or
nothing, on a hub (``app.hub``). This is the one place that tells the two apart.

Routes reach the service through its face (``health()``, ``kill_report()``,
``timers_here()``, ``live_timers()``, ``soonest()``, ``last_seq()``, ``committed()``),
never through the engine's attributes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.exc import DatabaseError, OperationalError

from app import log_names
from app.access.backpressure import Backpressure
from app.access.connection_gate import ConnectionGate
from app.access.reader_slots import ReaderSlots
from app.access.unsent_data import UnsentData
from app.db.database import make_engine, migrate
from app.db.database_status import (
    DATABASE_ERRORS,
    DatabaseStatus,
    DatabaseUnreachable,
    masked_url,
    one_line,
    reach_database,
    unreachable_message,
)
from app.db.history_quota import HistoryQuota
from app.db.incident_rows import IncidentRecorder
from app.db.learned_timeouts import LearnedTimeouts
from app.db.loss_ledger import LossLedger
from app.db.nodes import node_statuses
from app.db.private_files import secure_sqlite_files
from app.db.recorder import Recorder
from app.hub import Hub
from app.notify.alertmanager import Alertmanager
from app.notify.conditions import Conditions, record_losses
from app.notify.outbox import Outbox
from app.notify.sender import Sender
from app.ops.health import Health, RecorderHealth
from app.ops.metrics import ServiceMetrics
from app.ops.stragglers import SlowdownCollector, Stragglers
from app.settings import Settings
from app.timer_keeper import EventView, TimerKeeper
from app.worker_node import WorkerNode
from timer_core import ProcessSignaller, Reaper
from timer_core.engine import Clock, Listener, SystemClock, Timer
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.sources import UserFifos

__all__ = ["Service", "Waits"]

# What the start wraps around its waits: a context a signal may interrupt (app.server).
Waits = Callable[[], AbstractContextManager[None]]

logger = logging.getLogger(log_names.SERVICE)


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        signaller: ProcessSignaller | None = None,
        views: Sequence[EventView] = (),
    ) -> None:
        """``clock`` and ``signaller``: the engine's, for tests (a ManualClock, a
        signaller that records instead of sending). ``views``: fed every event (the
        composition root passes the dashboard's live feed)."""
        self.settings = settings
        # Whether start() has finished (and stop() not yet run); _running: whether
        # parts have started, which a failed start stops again.
        self.started = False
        self._running = False
        # Whether claim() has run for the next start() (which then claims no more).
        self._claimed = False
        self.engine = make_engine(settings.db_url, settings.db_busy_timeout)
        # Notifications (contract 11): written with the events that cause them, sent
        # by a thread of their own.
        self.sender = Sender(
            self.engine,
            settings.node,
            settings.page_url,
            lease=settings.notify_lease,
            retention_seconds=settings.retention_days * 86400,
        )
        self.outbox = Outbox(settings.node, settings.incident_window, wake=self.sender.wake)
        if settings.alertmanager_url:
            self.sender.alertmanager = Alertmanager(
                settings.alertmanager_url, self.engine, settings.page_url, settings.incident_window
            )
        self.recorder = Recorder(
            self.engine,
            buffer_size=settings.recorder_buffer,
            retention_seconds=settings.retention_days * 86400,
            prune_interval=settings.prune_interval,
            incidents=IncidentRecorder(settings.node, settings.incident_window),
            also=[self.outbox.record],
            committed=[self.outbox.committed],
        )
        # The recorder's bound is kept where work comes in, so nothing known is dropped.
        self.backpressure = Backpressure(self.recorder, settings.recorder_buffer)
        # HTTP connections, held within what the file descriptors allow (app.server).
        self.connections = ConnectionGate(
            settings.max_connections, max_per_user=settings.max_connections_per_user
        )
        # Response data clients leave unread: how long, and how much (app.access.unsent_data).
        self.unsent = UnsentData(settings.send_timeout, settings.max_unsent_bytes)
        # HTTP reads' share of the database pool (app.access.reader_slots).
        self.readers = ReaderSlots()
        # The timeouts of "auto" requests, learned from the recorded holds (contract 12).
        self.learned = LearnedTimeouts(
            self.engine,
            settings.auto_initial_timeout,
            settings.auto_min_samples,
            settings.auto_floor,
        )
        self.metrics = ServiceMetrics(
            self.health,
            self.node_counts,
            refusals=lambda: self.keeper.user_share.refusals,
            notifications=lambda: (dict(self.sender.outcomes), self.sender.queue_age),
        )
        self._views = tuple(views)
        self.started_at = time.time()
        self.pid = os.getpid()
        # Whether the database answers, asked by writes, reads and /healthz (contract 14).
        self.database = DatabaseStatus(self.engine, busy_since=lambda: self.recorder.busy_since)
        # Ranks slow but not stuck (contract 12): each release against the other ranks'.
        self.stragglers = Stragglers(
            settings.straggler_ratio, settings.straggler_window, settings.straggler_max_series
        )
        self.metrics.registry.register(SlowdownCollector(self.stragglers))
        listeners: list[Listener] = [self.recorder, self.metrics, self.stragglers, *self._views]
        engine_clock = clock or SystemClock()
        # The one place a hub and a worker's node part ways (contract 9).
        self.keeper: TimerKeeper = (
            Hub()
            if settings.hub
            else WorkerNode(
                settings,
                self.engine,
                clock=engine_clock,
                signaller=signaller or ProcessSignaller(),
                backpressure=self.backpressure,
                database=self.database,
                listeners=listeners,
            )
        )
        if isinstance(self.keeper, WorkerNode):
            self.stragglers.publish_to(self.keeper.reaper.bus.publish, engine_clock.time)
        # Each user's share of the disk: the history kept below --max-db-size.
        self.recorder.watch_size(
            HistoryQuota(
                self.engine, settings.max_db_size, self.recorder.prune, self.keeper.user_share
            )
            if settings.max_db_size > 0
            else None,
            settings.db_size_check_interval,
        )
        # Losses outlive a restart: /healthz reports them until acknowledged.
        self.losses = LossLedger(
            self.engine,
            lambda: {"dropped": self.recorder.dropped, "rejected": self.recorder.rejected},
            also=lambda connection, rows: record_losses(connection, settings.node, rows),
        )
        # Nodes down and overdue kills are told too (contract 11), from the sender's thread.
        self.sender.conditions = Conditions(
            self.engine, settings.node, settings.node_timeout, self.kill_report
        )

    def claim(self, interruptible: Waits = contextlib.nullcontext) -> None:
        """Make the database's files private and take this node's lock
        (``ServiceLockError`` names the live service that holds it). Before anything is
        migrated or re-armed; the CLI calls it first, so a refusal is one clear line,
        and ``start`` then claims no more (once: with --db-wait, a database lost in
        between would be waited for again). ``interruptible``: around the wait for
        the database, the one place a signal may cut the claim short
        (``app.server``)."""
        # Before SQLite makes any file: the database holds every stack and event.
        secure_sqlite_files(self.settings.db_url)
        # One line if it cannot be reached (--db-wait: after trying that long).
        with interruptible():
            reach_database(self.engine, self.settings.db_url, self.settings.db_wait)
        self.keeper.claim()
        self._claimed = True

    def start(self, interruptible: Waits = contextlib.nullcontext) -> None:
        """Claim the database (unless ``claim`` has), migrate it, and start every part.
        A failure stops what had started (and releases the claim) before it is raised.
        Called by the CLI before the HTTP server runs, so a failure is one line; the
        app's lifespan calls it when no one has (tests). ``interruptible``: around the
        waits (for the database, the migration), the only places a signal may cut the
        start short: elsewhere it could land halfway through re-arming."""
        try:
            if not self._claimed:
                self.claim(interruptible)
            self._start_claimed(interruptible)
        except BaseException:
            try:
                self.stop()
            except Exception as error:  # the start's own failure is the one to tell
                logger.warning("stopping after a failed start: %s", one_line(error))
            raise
        finally:
            # Held until stop() releases it; a later start claims again.
            self._claimed = False
        self.started = True

    @property
    def db_shown(self) -> str:
        """The database URL as logs and pages show it: its password masked."""
        return masked_url(self.settings.db_url)

    def _start_claimed(self, interruptible: Waits) -> None:
        try:
            with interruptible():
                migration = migrate(self.engine)
        except OperationalError as error:
            raise DatabaseUnreachable(unreachable_message(self.settings.db_url, error)) from None
        except DatabaseError as error:  # not a database, or a damaged one
            raise RuntimeError(
                f"the database {self.db_shown} cannot be read: {one_line(error)}. "
                "Move it away (a new one is made) or point --db-url elsewhere."
            ) from None
        logger.info("%s", migration.line())
        # From here on parts start, and stop() has something to stop.
        self._running = True
        self.losses.load()
        for view in self._views:
            view.seed(self.engine)
        self.recorder.start()
        if self.keeper.local_node is not None:
            # This process holds the node's lock: its predecessor is dead, and what it
            # was sending goes now (a hub holds no node's lock, and leaves them).
            self.sender.release_own_leases()
        self.sender.start()
        self.losses.start()
        self.database.start()
        self.keeper.start()
        logger.info("%s", self.keeper.started_line(self.db_shown))

    # ---- the face routes use ---------------------------------------------------------

    @property
    def local_node(self) -> str | None:
        """The node whose timers this service's engine holds: None on a hub."""
        return self.keeper.local_node

    @property
    def user_fifos(self) -> UserFifos | None:
        """The per-user FIFOs (--fifo-dir), once started; None without them."""
        return self.keeper.user_fifos

    def timers_here(self) -> Reaper:
        """The engine that arms, moves and releases this node's timers. A hub keeps
        none: ``NoTimersHere``, answered 409 (contract 9)."""
        return self.keeper.timers_here()

    def refused(self, request: ArmRequest, origin: Origin, reason: str) -> None:
        """Log and record a refused request (a read of another user's stack) as the
        engine's own refusals are: a hub, which records no events, lets it go."""
        self.keeper.refused(request, origin, reason)

    def live_timers(self) -> Sequence[Timer]:
        """This node's active timers, from the engine (none on a hub)."""
        return self.keeper.live_timers()

    def soonest(
        self, limit: int, *, pid: int | None = None, scope_contains: str | None = None
    ) -> tuple[Sequence[Timer], int]:
        """The ``limit`` active timers nearest their deadlines and how many match:
        scans shared between readers within a CPU budget (``ReadsThrottled``)."""
        return self.keeper.soonest(limit, pid=pid, scope_contains=scope_contains)

    def last_seq(self) -> int:
        """The number of the engine's latest event: a write's own are at or below it."""
        return self.keeper.last_seq()

    @property
    def commit_timeout(self) -> float:
        """How long a write waits for its commit before it is answered 202."""
        return self.settings.commit_timeout

    async def committed(self, seq: int, timeout: float) -> bool:
        """Whether every event up to ``seq`` is committed, waiting up to ``timeout``
        (not at all for 0)."""
        if self.recorder.committed_seq >= seq:
            return True
        return timeout > 0 and await self.recorder.wait_committed(seq, timeout)

    def unwritable(self, patience: float) -> str | None:
        """Why the database cannot take writes now (a batch in flight longer than
        ``patience`` included), or None. Never waits on the database."""
        return self.database.problem(patience) or self.recorder.degraded_reason

    def kill_report(self) -> dict[str, Any]:
        """The kill path's health: overdue kills (failing), a recent error (degraded)."""
        return self.keeper.kill_report()

    def health(self) -> Health:
        """Measured once, read by /healthz, the metrics and the dashboard alike."""
        recorder = self.recorder
        keeper = self.keeper
        descriptors = {**self.connections.status(), **self.unsent.status()}
        return Health(
            pid=self.pid,
            uptime_seconds=time.time() - self.started_at,
            active_timers=keeper.active_count(),
            hub=keeper.local_node is None,
            reaper=keeper.loop_health(),
            reaper_restarts=keeper.reaper_restarts,
            recorder=RecorderHealth(
                backlog=recorder.backlog(),
                dropped=recorder.dropped,
                write_errors=recorder.write_errors,
                last_error=recorder.degraded_reason,
                behind=self.backpressure.outstanding(),
                pauses=self.backpressure.pauses,
                rejected=recorder.rejected,
                commits=recorder.commits,
                pruned_events=recorder.pruned_events,
                backlog_age_seconds=recorder.backlog_age(),
            ),
            kills=self.kill_report(),
            lost_events_unacknowledged=self.losses.unacknowledged(),
            losses_problem=self.losses.problem(),
            fifo=self.settings.fifo,
            **keeper.fifo_report(),
            captures_abandoned=keeper.captures_abandoned(),
            descriptors=descriptors,
            descriptor_problems=self.connections.problems(descriptors),
            database_problem=self.database.problem(),
            lock_problem=keeper.lock_problem,
        )

    def node_counts(self) -> dict[str, int] | None:
        """How many of the fleet's nodes are up and down (``timer_nodes``); None while
        the database is away (no sample: the nodes' state is unknown, not down)."""
        if self.database.problem() is not None:
            return None
        try:
            # Up or down only: the per-node active counts would read every active timer.
            statuses = node_statuses(self.engine, self.settings.node_timeout, count_active=False)
        except DATABASE_ERRORS as error:
            # Met before anything said the database is away (a locked SQLite file, the
            # first second of an outage): logged as a read's error is, not a traceback
            # per scrape.
            self.database.read_failed(error)
            return None
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status.status] = counts.get(status.status, 0) + 1
        return counts

    def stop(self) -> None:
        """Stop what started, write what is buffered, release the claim. Again, or
        after a start that failed early (before the parts started): only the release."""
        if self._running:
            self._running = False
            self.started = False
            self.sender.stop()
            self.keeper.stop()
            self.database.stop()
            self.recorder.stop()
            self.recorder.flush()
            self.losses.stop()
        self.keeper.release_claim()
        self._claimed = False  # a later start claims again
        self.engine.dispose()
