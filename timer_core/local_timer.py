"""``LocalTimerClient``/``LocalTimerServer`` over a ``multiprocessing.Queue``,
as in ``torch.distributed.elastic.timer.local_timer``, on the deadline-driven Reaper.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from queue import Empty
from typing import Any

from . import log_names
from .api import RequestQueue, TimerClient, TimerRequest, TimerServer
from .compat_hooks import HookedSignaller, is_overridden, reaped, timers_view
from .diagnosis.stack_capture import StackCapturer
from .engine.arm_request import ArmRequest, Origin
from .engine.process import ProcessIdentity, SignalOutcome
from .engine.reaper import Reaper

__all__ = ["LocalTimerClient", "LocalTimerServer", "MultiprocessingRequestQueue"]

logger = logging.getLogger(log_names.LOCAL_TIMER)

# Upper bound on how long the request thread blocks, so ``stop()`` is prompt
# whatever ``max_interval`` is. It has no effect on kill latency.
_STOP_POLL_SECONDS = 0.25

# The queue's writers are this server's own children, free to target any process, as in
# torch; their items carry no signal: each is reaped with SIGKILL.
_QUEUE = Origin("queue")


class LocalTimerClient(TimerClient):
    """Sends this process's requests to a ``LocalTimerServer`` through ``mp_queue``.

    It takes no ``fail_open``, unlike the HTTP and FIFO clients: a put on a
    ``multiprocessing.Queue`` never fails because its server is away; the queue's feeder
    thread buffers what no one reads. So a worker whose server stopped already goes on,
    unwatched and unwarned, as with torch; once more than a pipe's worth (64 KiB) is
    unread, its exit waits for the feeder thread forever, as with torch.
    """

    def __init__(self, mp_queue: Any) -> None:
        self._mp_queue = mp_queue

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self._mp_queue.put(TimerRequest(os.getpid(), scope_id, expiration_time))

    def release(self, scope_id: str) -> None:
        self._mp_queue.put(TimerRequest(os.getpid(), scope_id, -1))


class MultiprocessingRequestQueue(RequestQueue):
    """A ``RequestQueue`` reading a ``multiprocessing.Queue``."""

    def __init__(self, mp_queue: Any) -> None:
        self._mp_queue = mp_queue

    def size(self) -> int:
        return int(self._mp_queue.qsize())

    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        requests: list[TimerRequest] = []
        give_up_at = time.monotonic() + timeout
        for _ in range(size):
            wait = give_up_at - time.monotonic()
            try:
                request = self._mp_queue.get(block=wait > 0, timeout=max(wait, 0) or None)
            except Empty:
                break
            requests.append(request)
        return requests


class LocalTimerServer(TimerServer):
    """Reaps (SIGKILL) local workers whose timers expire.

    ``max_interval`` only bounds how long the request thread waits on the
    queue; kills happen at the deadline, whatever its value. Pass ``reaper``
    to share an engine (the service does), or tune the one made here with
    ``escalate_after`` and ``signal_children``.
    """

    def __init__(
        self,
        mp_queue: Any,
        max_interval: float = 60,
        daemon: bool = True,
        *,
        reaper: Reaper | None = None,
        signal_children: bool = False,
        capture_stacks: bool = False,
    ) -> None:
        super().__init__(MultiprocessingRequestQueue(mp_queue), max_interval, daemon)
        self._owns_reaper = reaper is None
        self.reaper = reaper or Reaper(
            signaller=HookedSignaller(self._reap_hook),
            signal_children=signal_children,
            capturer=StackCapturer() if capture_stacks else None,
        )
        self._source_thread: threading.Thread | None = None

    @property
    def _timers(self) -> Mapping[tuple[int, str], TimerRequest]:
        """The live timers as torch keeps them (a read-only snapshot)."""
        return timers_view(
            self.reaper, lambda view: TimerRequest(view.pid, view.scope_id, view.expiration_time)
        )

    # torch's TimerServer interface, on the engine

    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        for request in timer_requests:
            self._apply(request)

    def clear_timers(self, worker_ids: set[Any]) -> None:
        for pid in worker_ids:
            self.reaper.clear_worker(pid, reason="cleared by the server")

    def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
        return {
            pid: [TimerRequest(t.pid, t.scope_id, t.expiration_time) for t in timers]
            for pid, timers in self.reaper.expired_by_worker(deadline).items()
        }

    def _reap_worker(self, worker_id: Any) -> bool:
        return self.reaper.signal_now(worker_id, signal.SIGKILL)

    def _reap_hook(self, identity: ProcessIdentity, signum: int) -> SignalOutcome | None:
        # A subclass's _reap_worker (torch's hook) reaps in its own way; it is given
        # the worker only, as in torch.
        if not is_overridden(self, "_reap_worker", _ORIGINAL_REAP_WORKER):
            return None
        return reaped(self._reap_worker(identity.pid))

    def start(self) -> None:
        logger.info("starting LocalTimerServer (max_interval=%s)", self._max_interval)
        self._stop_signaled = False
        if self._owns_reaper:
            self.reaper.start()
        self._source_thread = threading.Thread(
            target=self._read_requests, name="timer-mp-queue", daemon=self._daemon
        )
        self._source_thread.start()

    def stop(self) -> None:
        self._stop_signaled = True
        if self._source_thread is not None:
            self._source_thread.join(self._max_interval + _STOP_POLL_SECONDS)
            self._source_thread = None
        if self._owns_reaper:
            self.reaper.stop()

    def _run_watchdog(self) -> None:
        """One pass of torch's watchdog: apply the requests in the queue (waiting up to
        ``max_interval``, capped so that ``stop()`` stays prompt), then reap what is due now.

        The Reaper's thread already kills at each deadline, so no kill waits for a pass.
        The pass exists because torch's tests, subclasses and monitoring call it, and
        count on the running server calling it about once per ``max_interval``: the
        request thread runs it in a loop. A step from this thread is safe beside the
        Reaper's: each due timer is taken out under the engine's lock by one of them.
        """
        pending = max(1, self._request_queue.size())
        wait = min(self._max_interval, _STOP_POLL_SECONDS)
        self.register_timers(self._request_queue.get(pending, wait))
        self.reaper.step()

    def _read_requests(self) -> None:
        while not self._stop_signaled:
            try:
                self._run_watchdog()
            except (EOFError, OSError, ValueError):
                logger.exception("the request queue failed; stopping the request thread")
                return
            except Exception:
                logger.exception("error reading timer requests")

    def _apply(self, request: TimerRequest) -> None:
        try:
            pid, scope_id, expiration_time = (
                request.worker_id,
                request.scope_id,
                request.expiration_time,
            )
        except AttributeError:
            logger.warning("ignoring a malformed timer request: %r", request)
            return
        self.reaper.apply(ArmRequest(pid, scope_id, expiration_time, signal.SIGKILL), _QUEUE)


# As defined here; a subclass or a patch that replaces it is honoured.
_ORIGINAL_REAP_WORKER = LocalTimerServer._reap_worker
