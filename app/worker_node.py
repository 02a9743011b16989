"""A worker's node: the reaper that arms and kills this node's timers, the FIFOs that
feed it, and what keeps it honest (the node's lock and beat, the supervisor).

A hub (``app.hub``) is the same service without any of this. The two answer
``Service`` alike (``app.timer_keeper.TimerKeeper``), so nothing else asks which it is.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from app import __version__, log_names
from app.access.backpressure import Backpressure
from app.db import store
from app.db.database_status import DatabaseStatus
from app.db.models import Timer
from app.db.nodes import NodeBeat, register_node
from app.db.restore_identities import RestoreIdentities
from app.db.service_lock import ServiceLock
from app.db.timer_ids import FleetTimerIds
from app.ops.health import kill_path_report
from app.ops.periodic import Periodic
from app.settings import Settings
from timer_core import ProcessIdentity, ProcessSignaller, Reaper
from timer_core.diagnosis import StackCapturer, default_stack_dir
from timer_core.engine import Clock, Listener, LoopHealth
from timer_core.engine import Timer as TimerSnapshot
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.user_share import UserShare
from timer_core.sources import FifoDirectory, FifoSource, UserFifos, resolve_uids

__all__ = ["STALL_EXIT_CODE", "WorkerNode"]

logger = logging.getLogger(log_names.SERVICE)

_SUPERVISE_SECONDS = 0.5
# EX_SOFTWARE: an internal error; systemd's Restart=on-failure restarts the service.
STALL_EXIT_CODE = 70


def _exit_for_supervisor() -> None:
    # A stuck thread cannot be stopped from Python; a clean restart re-arms every timer.
    logging.shutdown()
    os._exit(STALL_EXIT_CODE)


def _beat_interval(settings: Settings) -> float:
    """Often enough that one missed beat does not make the node look down."""
    return max(0.5, min(5.0, settings.node_timeout / 3))


class WorkerNode:
    """This node's timers and what keeps them; built by ``Service`` with the parts it
    shares (the database, the recorder's backpressure, the engine's listeners)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Clock,
        signaller: ProcessSignaller,
        backpressure: Backpressure,
        database: DatabaseStatus,
        listeners: Sequence[Listener],
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._backpressure = backpressure
        self._identities = RestoreIdentities()
        self.signaller = signaller
        self.fifo: FifoSource | None = None
        # --fifo-dir: one FIFO per uid (POST /fifos makes the caller's).
        self.user_fifos: UserFifos | None = None
        self.reaper_restarts = 0
        # Fleet-unique timer ids: this node's number is known once it has registered.
        self.timer_ids = FleetTimerIds()
        self.node_beat = NodeBeat(engine, settings.node, _beat_interval(settings))
        # At once on its return: no node shows down for an outage of its database.
        database.on_return(self.node_beat.beat)
        # One live service per database and node.
        self.lock = ServiceLock(engine, settings.db_url, settings.node)
        # PostgreSQL: a lost session loses the lock; it is taken again (app.db.service_lock).
        self.lock_check = Periodic("timer-node-lock", _beat_interval(settings), self.lock.check)
        self.capturer = (
            StackCapturer(
                settings.stack_budget,
                use_py_spy=settings.stack_py_spy,
                signaller=signaller,
                stack_dir=settings.stack_dir or default_stack_dir(),
            )
            if settings.capture_stacks
            else None
        )
        self.reaper = Reaper(
            signaller=signaller,
            capturer=self.capturer,
            escalate_after=settings.escalate_after or None,
            signal_children=settings.signal_children,
            timer_ids=self.timer_ids,
            max_timers_per_uid=settings.max_timers_per_user,
            clock=clock,
            overdue_margin=settings.overdue_margin,
            identify_process=self._identities,
            node=settings.node,
            incident_window=settings.incident_window,
            unkillable_after=settings.unkillable_after or None,
        )
        backpressure.follow(self.reaper.bus.last_seq)
        # Each user's share of the disk: a rate of arms and heartbeats (and the history
        # kept below --max-db-size, which the service's HistoryQuota sets on it).
        self.reaper.user_share.limit_rate(settings.max_events_per_user_per_second)
        for listener in listeners:
            self.reaper.add_listener(listener)
        if self.capturer is not None and self.capturer.dump_dirs is not None:
            # Each user's stack dump directory, made when a timer first asks for dumps.
            self.reaper.add_listener(self.capturer.dump_dirs)
        # What to do when the reaper loop stalls; tests replace it.
        self.on_stall: Callable[[], None] = _exit_for_supervisor
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ---- what Service asks of every keeper (app.timer_keeper.TimerKeeper) ------------------

    @property
    def local_node(self) -> str | None:
        return self._settings.node

    @property
    def user_share(self) -> UserShare:
        return self.reaper.user_share

    def timers_here(self) -> Reaper:
        return self.reaper

    def refused(self, request: ArmRequest, origin: Origin, reason: str) -> None:
        self.reaper.emit_refused(request, origin, reason)

    def live_timers(self) -> Sequence[TimerSnapshot]:
        return [timer.snapshot() for timer in self.reaper.live_timers()]

    def soonest(
        self, limit: int, *, pid: int | None, scope_contains: str | None
    ) -> tuple[Sequence[TimerSnapshot], int]:
        return self.reaper.reader.soonest(limit, pid=pid, scope_contains=scope_contains)

    def active_count(self) -> int:
        return self.reaper.active_count()

    def last_seq(self) -> int:
        return self.reaper.bus.last_seq()

    def loop_health(self) -> LoopHealth:
        return self.reaper.health(self._settings.reaper_stall_seconds)

    def kill_report(self) -> dict[str, Any]:
        return kill_path_report(self.reaper)

    def captures_abandoned(self) -> int:
        captures = self.reaper.expiry.captures
        return captures.abandoned_total if captures is not None else 0

    def fifo_report(self) -> dict[str, Any]:
        """Health's FIFO fields, over both kinds of FIFO."""
        malformed = 0
        problems: list[str] = []
        restorations = 0
        if self.fifo is not None:
            malformed += self.fifo.malformed_lines
            restorations += self.fifo.restorations
            problems += [self.fifo.problem] if self.fifo.problem else []
        if self.user_fifos is not None:  # garbage on the per-user FIFOs counts too
            malformed += self.user_fifos.malformed_lines
            restorations += self.user_fifos.restorations
            problems += self.user_fifos.problems.values()
        return {
            "fifo_malformed_lines": malformed,
            "fifo_problems": tuple(problems),
            "fifo_restorations": restorations,
        }

    @property
    def lock_problem(self) -> str | None:
        return self.lock.problem

    def claim(self) -> None:
        self.lock.acquire()

    def release_claim(self) -> None:
        self.lock.release()

    def start(self) -> None:
        settings = self._settings
        number, highest = register_node(self._engine, settings.node, __version__)
        self.timer_ids.start(number, highest)
        self.node_beat.start()
        self.lock_check.start()
        with Session(self._engine) as session:
            active = store.active_timers(session, settings.node)
        self._restore(list(active))
        self.reaper.start()
        if settings.fifo:
            self.fifo = FifoSource(
                settings.fifo,
                self.reaper,
                mode=settings.fifo_mode,
                may_read=self._backpressure.may_read,
                guard=True,  # made again when deleted or replaced (torch's agent does)
            )
            self.fifo.start()
        if settings.fifo_dir:
            self.user_fifos = UserFifos(
                FifoDirectory(settings.fifo_dir),
                self.reaper,
                may_read=self._backpressure.may_read,
            )
            self.user_fifos.start(resolve_uids(settings.fifo_users))
            logger.info(
                "per-user FIFOs in %s, for uids %s",
                settings.fifo_dir,
                ", ".join(map(str, self.user_fifos.uids())) or "none yet",
            )
        self._stopping.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="timer-supervisor", daemon=True
        )
        self._supervisor.start()

    def started_line(self, db_shown: str) -> str:
        fifo = f", FIFO {self._settings.fifo}" if self._settings.fifo else ""
        return (
            f"timer-service started: {self.reaper.active_count()} timers re-armed, "
            f"db {db_shown}{fifo}"
        )

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
        self.reaper.stop()

    # ---- this node's own -------------------------------------------------------------

    def _restore(self, active: list[Timer]) -> None:
        """Re-arm the timers that were active when the service last stopped or crashed."""
        with self._identities.remembering():
            for row in active:
                identity = ProcessIdentity(row.pid, row.process_create_time or 0.0, row.uid)
                request = ArmRequest(
                    row.pid,
                    row.scope_id,
                    row.expiration_time,
                    row.signal,
                    row.dump_signal,
                    row.labels(),
                    row.timeout_source,
                )
                self.reaper.restore(
                    row.id, identity, request, Origin(row.source), acquired_at=row.acquired_at
                )

    def supervise_once(self) -> None:
        """Watch the watchdog: restart a dead reaper loop; act on a stalled one."""
        reaper = self.reaper
        if self._stopping.is_set():
            return
        if not reaper.is_running():
            if reaper.restart_loop():
                self.reaper_restarts += 1
                logger.critical(
                    "the reaper thread died; restarted it (%d restarts)", self.reaper_restarts
                )
            return
        reaper.kill_watch.check()  # logs when kills become overdue, and when not any more
        loop = self.loop_health()
        if loop.problem is not None:
            logger.critical("%s: exiting, for the supervisor to restart the service", loop.problem)
            self.on_stall()

    def _supervise(self) -> None:
        while not self._stopping.wait(_SUPERVISE_SECONDS):
            try:
                self.supervise_once()
            except Exception:
                logger.exception("the supervisor failed a check")
