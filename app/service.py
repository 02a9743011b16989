"""The running service's parts, started and stopped together by the app's lifespan."""

from __future__ import annotations

import logging
import os
import time

from sqlalchemy import func
from sqlmodel import Session, col, select

from timer_core import ProcessIdentity, Reaper
from timer_core.fifo_source import FifoSource

from .db import make_engine, migrate
from .live_feed import LiveFeed
from .metrics import ServiceMetrics
from .models import Timer
from .recorder import Recorder
from .settings import Settings

__all__ = ["Service"]

logger = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        self.recorder = Recorder(self.engine, buffer_size=settings.recorder_buffer)
        self.reaper: Reaper | None = None
        self.fifo: FifoSource | None = None
        self.metrics = ServiceMetrics(self)
        self.live_feed = LiveFeed()
        self.started_at = time.time()
        self.pid = os.getpid()

    @property
    def running_reaper(self) -> Reaper:
        if self.reaper is None:
            raise RuntimeError("the service is not started")
        return self.reaper

    def start(self) -> None:
        migrate(self.engine)
        with Session(self.engine) as session:
            highest = session.exec(select(func.max(col(Timer.id)))).one()
            active = session.exec(select(Timer).where(col(Timer.state) == "active")).all()
        self.reaper = Reaper(
            escalate_after=self.settings.escalate_after or None,
            signal_children=self.settings.signal_children,
            first_timer_id=(highest or 0) + 1,
        )
        self.reaper.add_listener(self.recorder)
        self.reaper.add_listener(self.metrics)
        self.live_feed.seed(self.engine)
        self.reaper.add_listener(self.live_feed)
        self.recorder.start()
        self._restore(list(active))
        self.reaper.start()
        if self.settings.fifo:
            self.fifo = FifoSource(self.settings.fifo, self.reaper, mode=self.settings.fifo_mode)
            self.fifo.start()
        logger.info(
            "timer-service started: %d timers re-armed, db %s%s",
            self.reaper.active_count(),
            self.settings.db_url,
            f", FIFO {self.settings.fifo}" if self.settings.fifo else "",
        )

    def _restore(self, active: list[Timer]) -> None:
        """Re-arm the timers that were active when the service last stopped or crashed."""
        assert self.reaper is not None
        for row in active:
            identity = ProcessIdentity(row.pid, row.process_create_time or 0.0)
            self.reaper.restore(
                row.id,
                identity,
                row.scope_id,
                row.expiration_time,
                row.signal,
                source=row.source,
                acquired_at=row.acquired_at,
            )

    def stop(self) -> None:
        if self.fifo is not None:
            self.fifo.stop()
            self.fifo = None
        if self.reaper is not None:
            self.reaper.stop()
        self.recorder.stop()
        self.recorder.flush()
        self.engine.dispose()
