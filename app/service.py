"""The running service's parts, started and stopped together by the app's lifespan."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session

from app import __version__
from app.access.backpressure import Backpressure
from app.access.connection_gate import ConnectionGate
from app.access.reader_slots import ReaderSlots
from app.access.unsent_data import UnsentData
from app.db import store
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
from app.db.loss_ledger import LossLedger
from app.db.models import Timer
from app.db.nodes import NodeBeat, node_statuses, register_node
from app.db.private_files import secure_sqlite_files
from app.db.recorder import Recorder
from app.db.restore_identities import RestoreIdentities
from app.db.timer_ids import FleetTimerIds
from app.ops.health import Health, RecorderHealth, kill_path_report
from app.ops.metrics import ServiceMetrics
from app.ops.periodic import Periodic
from app.ops.service_lock import ServiceLock
from app.settings import Settings
from app.web.fleet_view import Fleet
from app.web.live_feed import LiveFeed
from timer_core import ProcessIdentity, ProcessSignaller, Reaper
from timer_core.diagnosis import StackCapturer, default_stack_dir
from timer_core.engine import Clock, Labels, LoopHealth, SystemClock
from timer_core.sources import FifoDirectory, FifoSource, UserFifos, resolve_uids

__all__ = ["STALL_EXIT_CODE", "Service"]

logger = logging.getLogger(__name__)


_SUPERVISE_SECONDS = 0.5
# EX_SOFTWARE: an internal error; systemd's Restart=on-failure restarts the service.
STALL_EXIT_CODE = 70


def _exit_for_supervisor() -> None:
    # A stuck thread cannot be stopped from Python; a clean restart re-arms every timer.
    logging.shutdown()
    os._exit(STALL_EXIT_CODE)


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        signaller: ProcessSignaller | None = None,
    ) -> None:
        """``clock`` and ``signaller``: the engine's, for tests (a ManualClock, a
        signaller that records instead of sending)."""
        self.settings = settings
        self.engine = make_engine(settings.db_url, settings.db_busy_timeout)
        self.recorder = Recorder(
            self.engine,
            buffer_size=settings.recorder_buffer,
            retention_seconds=settings.retention_days * 86400,
            prune_interval=settings.prune_interval,
            incidents=IncidentRecorder(settings.node, settings.incident_window),
        )
        # The recorder's bound is kept where work comes in, so nothing known is dropped.
        self.backpressure = Backpressure(self.recorder, settings.recorder_buffer)
        self._identities = RestoreIdentities()
        self.fifo: FifoSource | None = None
        # --fifo-dir: one FIFO per uid (POST /fifos makes the caller's).
        self.user_fifos: UserFifos | None = None
        # HTTP connections, held within what the file descriptors allow (app.server).
        self.connections = ConnectionGate(
            settings.max_connections, max_per_user=settings.max_connections_per_user
        )
        # Response data clients leave unread: how long, and how much (app.unsent_data).
        self.unsent = UnsentData(settings.send_timeout, settings.max_unsent_bytes)
        # HTTP reads' share of the database pool (app.reader_slots).
        self.readers = ReaderSlots()
        self.metrics = ServiceMetrics(
            self.health, self.node_counts, refusals=lambda: self.reaper.user_share.refusals
        )
        self.live_feed = LiveFeed()
        self.started_at = time.time()
        self.pid = os.getpid()
        self.reaper_restarts = 0
        self.signaller = signaller or ProcessSignaller()
        self.clock: Clock = clock or SystemClock()
        # Fleet-unique timer ids: this node's number is known once it has registered.
        self.timer_ids = FleetTimerIds()
        # What the dashboard shows of the other nodes sharing the database.
        self.fleet = Fleet(self.engine, settings.node, settings.hub, settings.node_timeout)
        self.node_beat = NodeBeat(self.engine, settings.node, _beat_interval(settings))
        # One live service per database and node (a hub arms nothing: it takes none).
        self.lock = ServiceLock(self.engine, settings.db_url, settings.node)
        # PostgreSQL: a lost session loses the lock; it is taken again (app.service_lock).
        self.lock_check = Periodic("timer-node-lock", _beat_interval(settings), self.lock.check)
        # Whether the database answers, asked by writes, reads and /healthz (contract 14).
        self.database = DatabaseStatus(self.engine, busy_since=lambda: self.recorder.busy_since)
        if not settings.hub:
            # At once on its return: no node shows down for an outage of its database.
            self.database.on_return(self.node_beat.beat)
        self.capturer = (
            StackCapturer(
                settings.stack_budget,
                use_py_spy=settings.stack_py_spy,
                signaller=self.signaller,
                stack_dir=settings.stack_dir or default_stack_dir(),
            )
            if settings.capture_stacks
            else None
        )
        # Built here, started in start() (never, on a hub).
        self.reaper = Reaper(
            signaller=self.signaller,
            capturer=self.capturer,
            escalate_after=settings.escalate_after or None,
            signal_children=settings.signal_children,
            timer_ids=self.timer_ids,
            max_timers_per_uid=settings.max_timers_per_user,
            clock=self.clock,
            overdue_margin=settings.overdue_margin,
            identify_process=self._identities,
            node=settings.node,
            incident_window=settings.incident_window,
        )
        self.backpressure.follow(self.reaper.bus.last_seq)
        # Each user's share of the disk: a rate of arms and heartbeats, and the history
        # kept below --max-db-size (app.history_quota).
        self.reaper.user_share.limit_rate(settings.max_events_per_user_per_second)
        self.recorder.watch_size(
            HistoryQuota(
                self.engine, settings.max_db_size, self.recorder.prune, self.reaper.user_share
            )
            if settings.max_db_size > 0
            else None,
            settings.db_size_check_interval,
        )
        self.reaper.add_listener(self.recorder)
        self.reaper.add_listener(self.metrics)
        self.reaper.add_listener(self.live_feed)
        if self.capturer is not None and self.capturer.dump_dirs is not None:
            # Each user's stack dump directory, made when a timer first asks for dumps.
            self.reaper.add_listener(self.capturer.dump_dirs)
        # Losses outlive a restart: /healthz reports them until acknowledged.
        self.losses = LossLedger(
            self.engine,
            lambda: {"dropped": self.recorder.dropped, "rejected": self.recorder.rejected},
        )
        # What to do when the reaper loop stalls; tests replace it.
        self.on_stall: Callable[[], None] = _exit_for_supervisor
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def claim(self) -> None:
        """Make the database's files private and take this node's lock
        (``ServiceLockError`` names the live service that holds it). Before anything is
        migrated or re-armed; the CLI calls it first, so a refusal is one clear line."""
        # Before SQLite makes any file: the database holds every stack and event.
        secure_sqlite_files(self.settings.db_url)
        # One line if it cannot be reached (--db-wait: after trying that long).
        reach_database(self.engine, self.settings.db_url, self.settings.db_wait)
        if not self.settings.hub:
            self.lock.acquire()

    def start(self) -> None:
        self.claim()
        try:
            self._start_claimed()
        except BaseException:
            self.lock.release()
            raise

    @property
    def db_shown(self) -> str:
        """The database URL as logs and pages show it: its password masked."""
        return masked_url(self.settings.db_url)

    def _start_claimed(self) -> None:
        try:
            migrate(self.engine)
        except OperationalError as error:
            raise DatabaseUnreachable(unreachable_message(self.settings.db_url, error)) from None
        except DatabaseError as error:  # not a database, or a damaged one
            raise RuntimeError(
                f"the database {self.db_shown} cannot be read: {one_line(error)}. "
                "Move it away (a new one is made) or point --db-url elsewhere."
            ) from None
        self.losses.load()
        self.live_feed.seed(self.engine)
        self.recorder.start()
        self.losses.start()
        self.database.start()
        if self.settings.hub:
            logger.info("timer-service hub: no reaper, no FIFO; db %s", self.db_shown)
            return
        number, highest = register_node(self.engine, self.settings.node, __version__)
        self.timer_ids.start(number, highest)
        self.node_beat.start()
        self.lock_check.start()
        with Session(self.engine) as session:
            active = store.active_timers(session, self.settings.node)
        self._restore(list(active))
        self.reaper.start()
        if self.settings.fifo:
            self.fifo = FifoSource(
                self.settings.fifo,
                self.reaper,
                mode=self.settings.fifo_mode,
                may_read=self.backpressure.may_read,
                guard=True,  # made again when deleted or replaced (torch's agent does)
            )
            self.fifo.start()
        if self.settings.fifo_dir:
            self.user_fifos = UserFifos(
                FifoDirectory(self.settings.fifo_dir),
                self.reaper,
                may_read=self.backpressure.may_read,
            )
            self.user_fifos.start(resolve_uids(self.settings.fifo_users))
            logger.info(
                "per-user FIFOs in %s, for uids %s",
                self.settings.fifo_dir,
                ", ".join(map(str, self.user_fifos.uids())) or "none yet",
            )
        self._stopping.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="timer-supervisor", daemon=True
        )
        self._supervisor.start()
        logger.info(
            "timer-service started: %d timers re-armed, db %s%s",
            self.reaper.active_count(),
            self.db_shown,
            f", FIFO {self.settings.fifo}" if self.settings.fifo else "",
        )

    def _restore(self, active: list[Timer]) -> None:
        """Re-arm the timers that were active when the service last stopped or crashed."""
        with self._identities.remembering():
            self._restore_rows(self.reaper, active)

    def _restore_rows(self, reaper: Reaper, active: list[Timer]) -> None:
        for row in active:
            identity = ProcessIdentity(row.pid, row.process_create_time or 0.0, row.uid)
            reaper.restore(
                row.id,
                identity,
                row.scope_id,
                row.expiration_time,
                row.signal,
                source=row.source,
                acquired_at=row.acquired_at,
                dump_signal=row.dump_signal,
                labels=Labels(row.job_id, row.rank, row.local_rank, row.world_size),
            )

    def health(self) -> Health:
        """Measured once, read by /healthz, the metrics and the dashboard alike."""
        recorder = self.recorder
        reaper = self.reaper
        descriptors = {**self.connections.status(), **self.unsent.status()}
        malformed = self.fifo.malformed_lines if self.fifo is not None else 0
        if self.user_fifos is not None:  # garbage on the per-user FIFOs counts too
            malformed += self.user_fifos.malformed_lines
        captures = reaper.expiry.captures
        # A hub runs no reaper: nothing to report of it, and nothing wrong with that.
        running = None if self.settings.hub else reaper
        stall = self.settings.reaper_stall_seconds
        return Health(
            pid=self.pid,
            uptime_seconds=time.time() - self.started_at,
            active_timers=reaper.active_count(),
            hub=self.settings.hub,
            reaper=LoopHealth() if running is None else running.health(stall),
            reaper_restarts=self.reaper_restarts,
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
            kills=kill_path_report(running),
            lost_events_unacknowledged=self.losses.unacknowledged(),
            losses_problem=self.losses.problem(),
            fifo=self.settings.fifo,
            fifo_malformed_lines=malformed,
            **self._fifo_guard_report(),
            captures_abandoned=captures.abandoned_total if captures is not None else 0,
            descriptors=descriptors,
            descriptor_problems=self.connections.problems(descriptors),
            database_problem=self.database.problem(),
            lock_problem=self.lock.problem,
        )

    def _fifo_guard_report(self) -> dict[str, Any]:
        """Health's ``fifo_problems`` and ``fifo_restorations``, over both kinds of FIFO."""
        problems: list[str] = []
        restorations = 0
        if self.fifo is not None:
            restorations += self.fifo.restorations
            problems += [self.fifo.problem] if self.fifo.problem else []
        if self.user_fifos is not None:
            restorations += self.user_fifos.restorations
            problems += self.user_fifos.problems.values()
        return {"fifo_problems": tuple(problems), "fifo_restorations": restorations}

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

    def supervise_once(self) -> None:
        """Watch the watchdog: restart a dead reaper loop; act on a stalled one."""
        reaper = self.reaper
        if self.settings.hub or self._stopping.is_set():
            return
        if not reaper.is_running():
            if reaper.restart_loop():
                self.reaper_restarts += 1
                logger.critical(
                    "the reaper thread died; restarted it (%d restarts)", self.reaper_restarts
                )
            return
        reaper.kill_watch.check()  # logs when kills become overdue, and when not any more
        loop = reaper.health(self.settings.reaper_stall_seconds)
        if loop.problem is not None:
            logger.critical("%s: exiting, for the supervisor to restart the service", loop.problem)
            self.on_stall()

    def _supervise(self) -> None:
        while not self._stopping.wait(_SUPERVISE_SECONDS):
            try:
                self.supervise_once()
            except Exception:
                logger.exception("the supervisor failed a check")

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5.0)
            self._supervisor = None
        if self.fifo is not None:
            self.fifo.stop()
            self.fifo = None
        if self.user_fifos is not None:
            self.user_fifos.stop()
            self.user_fifos = None
        self.node_beat.stop()
        self.lock_check.stop()
        self.database.stop()
        self.reaper.stop()
        self.recorder.stop()
        self.recorder.flush()
        self.losses.stop()
        self.lock.release()
        self.engine.dispose()


def _beat_interval(settings: Settings) -> float:
    """Often enough that one missed beat does not make the node look down."""
    return max(0.5, min(5.0, settings.node_timeout / 3))
