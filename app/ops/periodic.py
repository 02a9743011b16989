"""A step run every few seconds on a daemon thread of its own, which no error can end:
the loss ledger, WAL checkpoints and the node's heartbeat each run one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app import log_names

__all__ = ["Periodic"]

logger = logging.getLogger(log_names.PERIODIC)


class Periodic:
    """One step, repeated on its own daemon thread until stopped."""

    def __init__(
        self,
        name: str,
        interval: float,
        step: Callable[[], None],
        *,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """``step`` every ``interval`` seconds (first after one interval); an exception
        goes to ``on_error`` (default: logged with its traceback) and the next round
        runs as usual."""
        self.name = name
        self.interval = interval
        self._step = step
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._step()
            except Exception as error:  # the thread must outlive any one round
                try:
                    if self._on_error is None:
                        raise
                    self._on_error(error)
                except Exception:
                    logger.exception("%s failed a round; continuing", self.name)
