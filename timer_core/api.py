"""The torch-compatible public surface: ``timer_core.api`` mirrors
``torch.distributed.elastic.timer.api`` name for name and signature for signature.
"""

from __future__ import annotations

import abc
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from . import log_names

__all__ = [
    "RequestQueue",
    "TimerClient",
    "TimerRequest",
    "TimerServer",
    "configure",
    "expires",
]

logger = logging.getLogger(log_names.API)


class TimerRequest:
    """An acquire (``expiration_time`` ≥ 0, unix seconds) or a release (< 0)
    of the countdown timer ``scope_id`` held by ``worker_id``."""

    __slots__ = ["expiration_time", "scope_id", "worker_id"]

    def __init__(self, worker_id: Any, scope_id: str, expiration_time: float) -> None:
        self.worker_id = worker_id
        self.scope_id = scope_id
        self.expiration_time = expiration_time

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TimerRequest):
            return False
        return (self.worker_id, self.scope_id, self.expiration_time) == (
            other.worker_id,
            other.scope_id,
            other.expiration_time,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as in torch

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(worker_id={self.worker_id!r}, scope_id={self.scope_id!r}, "
            f"expiration_time={self.expiration_time!r})"
        )


class TimerClient(abc.ABC):
    """Acquires and releases the timers of the worker that holds it."""

    @abc.abstractmethod
    def acquire(self, scope_id: str, expiration_time: float) -> None:
        """Arm (or move) the timer ``scope_id`` to expire at ``expiration_time``."""

    @abc.abstractmethod
    def release(self, scope_id: str) -> None:
        """Disarm the timer ``scope_id``."""


class RequestQueue(abc.ABC):
    """The consumer side of a channel of ``TimerRequest``s."""

    @abc.abstractmethod
    def size(self) -> int:
        """How many requests are waiting now (it may only grow until ``get``)."""

    @abc.abstractmethod
    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        """Up to ``size`` requests, waiting no more than ``timeout`` seconds."""


class TimerServer(abc.ABC):
    """Watches timers and reaps the workers whose timers expire.

    This base class keeps torch's polling watchdog for subclasses written
    against torch's API. The servers in this package override ``start`` and
    ``stop`` to run the deadline-driven ``Reaper`` instead.
    """

    def __init__(
        self, request_queue: RequestQueue, max_interval: float, daemon: bool = True
    ) -> None:
        self._request_queue = request_queue
        self._max_interval = max_interval
        self._daemon = daemon
        self._watchdog_thread: threading.Thread | None = None
        self._stop_signaled = False

    @abc.abstractmethod
    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        """Apply acquires and releases (negative ``expiration_time``)."""

    @abc.abstractmethod
    def clear_timers(self, worker_ids: set[Any]) -> None:
        """Drop every timer of these workers."""

    @abc.abstractmethod
    def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
        """The timers with ``expiration_time`` ≤ ``deadline``, by worker."""

    @abc.abstractmethod
    def _reap_worker(self, worker_id: Any) -> bool:
        """Reap one worker; True when done (its timers are then cleared)."""

    def _reap_worker_no_throw(self, worker_id: Any) -> bool:
        try:
            return self._reap_worker(worker_id)
        except Exception:
            logger.exception("_reap_worker(%r) raised; treating the worker as reaped", worker_id)
            return True

    def _run_watchdog(self) -> None:
        pending = max(1, self._request_queue.size())
        self.register_timers(self._request_queue.get(pending, self._max_interval))
        reaped = set()
        for worker_id, expired in self.get_expired_timers(time.time()).items():
            logger.info(
                "reaping worker %r, expired scopes %s", worker_id, [r.scope_id for r in expired]
            )
            if self._reap_worker_no_throw(worker_id):
                reaped.add(worker_id)
            else:
                logger.error("could not reap worker %r; will retry", worker_id)
        self.clear_timers(reaped)

    def _watchdog_loop(self) -> None:
        while not self._stop_signaled:
            try:
                self._run_watchdog()
            except Exception:
                logger.exception("error in the timer watchdog loop")

    def start(self) -> None:
        logger.info("starting %s (max_interval=%s)", type(self).__name__, self._max_interval)
        self._stop_signaled = False
        self._watchdog_thread = threading.Thread(target=self._watchdog_loop, daemon=self._daemon)
        self._watchdog_thread.start()

    def stop(self) -> None:
        logger.info("stopping %s", type(self).__name__)
        self._stop_signaled = True
        if self._watchdog_thread is not None:
            self._watchdog_thread.join(self._max_interval)
            self._watchdog_thread = None


_timer_client: TimerClient | None = None


def configure(timer_client: TimerClient, *, worker_server: bool = False) -> None:
    """Set the client that ``expires`` uses when none is passed.

    ``worker_server=True`` also starts torch's worker server for this process, once,
    on a Unix socket only this user can reach (``own_worker_server``): the service
    then takes the worker's Python stack and flight recorder over it in milliseconds,
    before any signal. It needs torch, and raises ``WorkerServerUnavailable`` (saying
    what to do) without it, before the client is set."""
    global _timer_client
    if worker_server:
        # Imported here: torch is optional, and loaded only by those who ask for it.
        from .own_worker_server import start_worker_server

        start_worker_server()
    _timer_client = timer_client
    logger.info("timer client configured: %s", type(timer_client).__name__)


@contextmanager
def expires(
    after: float | Literal["auto"], scope: str | None = None, client: TimerClient | None = None
) -> Iterator[None]:
    """Arm a timer that expires ``after`` seconds from now, released when the
    block ends. The default scope is the caller's ``file#line``.

    ``after="auto"`` lets the service choose: the timeout it learned from how long this
    scope's blocks took in this job, the initial timeout until it has seen enough of
    them (contract 12). Only a client that asks the service has it (HttpTimerClient);
    torch's clients send a deadline."""
    if client is None:
        if _timer_client is None:
            raise RuntimeError("Configure timer client before using countdown timers.")
        client = _timer_client
    if scope is None:
        # Two frames up: this generator, then contextlib's __enter__, then the caller.
        caller = sys._getframe(2)
        scope = f"{caller.f_code.co_filename}#{caller.f_lineno}"
    if after == "auto":
        acquire_auto = getattr(client, "acquire_auto", None)
        if acquire_auto is None:
            raise TypeError(
                f'expires(after="auto") needs a client that asks the service for the '
                f"timeout (HttpTimerClient); {type(client).__name__} sends a deadline of its "
                "own: give after= in seconds"
            )
        acquire_auto(scope)
    else:
        client.acquire(scope, time.time() + after)
    try:
        yield
    finally:
        client.release(scope)
