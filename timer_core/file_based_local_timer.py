"""``FileTimerClient``/``FileTimerServer`` over a FIFO, as in
``torch.distributed.elastic.timer.file_based_local_timer``, on the Reaper.

Unlike torch's server, this one never signals its own process, opens the
FIFO without blocking, creates it with mode 0600, and skips malformed lines
without losing the good ones read with them. Its client may fail open
(``fail_open=True``): see ``timer_core.fail_open``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal as signal_module
import stat
import threading
import time
from collections.abc import Callable, Mapping

from . import log_names, wire
from .api import TimerClient, TimerRequest
from .compat_hooks import HookedSignaller, is_overridden, reaped, timers_view
from .debug_info_logging import log_debug_info_for_expired_timers
from .diagnosis.stack_capture import StackCapturer
from .diagnosis.stack_capture import dump_stack_on as dump_stack_on_signal
from .engine.arm_request import ArmRequest
from .engine.events import TimerEvent
from .engine.process import ProcessIdentity, SignalOutcome, identify
from .engine.reaper import Reaper
from .engine.states import EventKind
from .fail_open import FailOpen, FailOpenCounts, ServerUnreachable
from .sources.fifo_source import FIFO, FifoSource

__all__ = ["FileTimerClient", "FileTimerRequest", "FileTimerServer", "TimerFifoUnreachable"]

logger = logging.getLogger(log_names.FILE_TIMER)

_OPEN_RETRIES = 10
_OPEN_RETRY_SLEEP = 0.1
_FULL_PIPE_WAIT_SECONDS = 2.0
# Why an open or a write of the FIFO fails when no server is reading it: none is there
# (ENOENT: not made yet, or removed with its server), none has it open (ENXIO), the one
# that had it let go mid-write (EPIPE). Anything else (EACCES: another user's FIFO,
# ENOTDIR, ELOOP) is the path's fault, and fails closed whatever fail_open says.
_NO_READER = frozenset({errno.ENOENT, errno.ENXIO, errno.EPIPE})
# A floor for the watchdog pass's period, so that max_interval=0 does not spin a core.
_MIN_WATCHDOG_INTERVAL = 0.005


class FileTimerRequest(TimerRequest):
    """A ``TimerRequest`` plus the signal to reap the worker with (≤ 0: observe only)."""

    __slots__ = ["dump_signal", "signal", "version"]

    def __init__(
        self,
        worker_pid: int,
        scope_id: str,
        expiration_time: float,
        signal: int = 0,
        *,
        dump_signal: int | None = None,
    ) -> None:
        super().__init__(worker_pid, scope_id, expiration_time)
        self.version = 1
        self.signal = signal
        self.dump_signal = dump_signal

    @property
    def worker_pid(self) -> int:
        return int(self.worker_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileTimerRequest):
            return False
        return super().__eq__(other) and (self.version, self.signal) == (
            other.version,
            other.signal,
        )

    __hash__ = None

    def to_json(self) -> str:
        # Version 1, the only one there is: wire's encoder writes it.
        return wire.to_json(
            ArmRequest(
                self.worker_pid, self.scope_id, self.expiration_time, self.signal, self.dump_signal
            )
        )


class TimerFifoUnreachable(BrokenPipeError, ServerUnreachable):
    """No server reads the FIFO (it is missing, nobody has it open, or it stayed full):
    what ``fail_open=True`` goes on after. A ``BrokenPipeError``, as torch raises."""


def _write_whole_line(fd: int, line: bytes, wait_seconds: float) -> None:
    """Write one line (≤ PIPE_BUF, so all or nothing). If the pipe is full because
    the server is behind, wait for room a little instead of failing at once, as
    torch's client does (it raises BlockingIOError into the training loop)."""
    give_up_at = time.monotonic() + wait_seconds
    while True:
        try:
            os.write(fd, line)
            return
        except BlockingIOError:
            left = give_up_at - time.monotonic()
            if left <= 0:
                raise TimerFifoUnreachable(
                    f"the timer FIFO stayed full for {wait_seconds}s: its server "
                    "is not keeping up (is it stopped, or overloaded?)"
                ) from None
            select.select([], [fd], [], left)


class FileTimerClient(FailOpenCounts, TimerClient):
    """Writes this process's requests to the FIFO at ``file_path``.

    ``dump_stack_on=signal.SIGUSR2`` registers a faulthandler dump on that signal,
    so the server gets this worker's Python stack even without ptrace rights.

    ``fail_open`` decides what a request does when no server reads the FIFO (it is
    missing, nobody has it open, or it stays full for 2 s). False (the default,
    torch's behaviour): it raises ``TimerFifoUnreachable``, a ``BrokenPipeError``, and
    the step dies with it; a worker never runs unwatched. True: it logs a WARNING when
    the outage begins and one when it ends, counts (``failed_requests``, ``outages``),
    and the block runs with no timer until a server reads the FIFO again; during the
    outage each request is tried once, without the waits (up to 1 s to open, 2 s for
    room) that are worth it only for a server that is there. A hang during the outage
    is not killed. A FIFO this user may not open, a path that is no FIFO (a regular
    file would take the lines and arm nothing), or a scope id too long for one line,
    raises in both modes.
    """

    def __init__(
        self,
        file_path: str,
        signal: int = signal_module.SIGKILL,
        *,
        dump_stack_on: int | None = None,
        fail_open: bool = False,
    ) -> None:
        self._file_path = file_path
        self.signal = signal
        self.dump_signal = dump_stack_on
        if dump_stack_on is not None:
            dump_stack_on_signal(dump_stack_on)
        self._fail_open = FailOpen(
            enabled=fail_open,
            server=f"the timer FIFO {file_path}",
            logger=logger,
            send_release=self._release,
        )

    def _open(self) -> int:
        # Non-blocking: if no server has the FIFO open, fail (ENXIO) instead of hanging.
        # A server starting may open it a moment later: retried, unless in an outage.
        attempts = 1 if self._fail_open.down else _OPEN_RETRIES
        for attempt in range(attempts):
            try:
                fd = os.open(self._file_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                # A regular file opens too, and takes the writes (torch's client writes
                # into it): no timer would ever be armed, and nothing would say so.
                if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise OSError(errno.EINVAL, "it is no FIFO")
                return fd
            except OSError as error:
                if attempt == attempts - 1 or error.errno not in _NO_READER:
                    raise
                time.sleep(_OPEN_RETRY_SLEEP)
        raise AssertionError("unreachable")

    def _send_request(self, request: FileTimerRequest) -> None:
        line = (request.to_json() + "\n").encode()
        # One write of at most PIPE_BUF bytes is atomic, so lines never interleave.
        if len(line) > select.PIPE_BUF:
            raise RuntimeError(
                f"FileTimerRequest larger than {select.PIPE_BUF} bytes is not supported; "
                f"shorten the scope id ({len(request.scope_id)} characters)"
            )
        try:
            fd = self._open()
        except OSError as error:
            if error.errno not in _NO_READER:
                raise BrokenPipeError(
                    f"Could not send the FileTimerRequest: {self._file_path} cannot be "
                    f"opened ({error.strerror}); check the path, and that it is this "
                    "user's FIFO (timer-service --fifo-dir makes one per user)."
                ) from error
            raise TimerFifoUnreachable(
                f"Could not send the FileTimerRequest: no FileTimerServer is reading "
                f"{self._file_path}. Start the server (or timer-service --fifo) first."
            ) from error
        wait = 0.0 if self._fail_open.down else _FULL_PIPE_WAIT_SECONDS
        try:
            _write_whole_line(fd, line, wait)
        except BrokenPipeError as error:
            if isinstance(error, TimerFifoUnreachable):
                raise
            # The reader closed the FIFO between the open and the write (EPIPE).
            raise TimerFifoUnreachable(
                f"Could not send the FileTimerRequest: the FileTimerServer reading "
                f"{self._file_path} let it go."
            ) from error
        finally:
            os.close(fd)

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        request = FileTimerRequest(
            os.getpid(), scope_id, expiration_time, self.signal, dump_signal=self.dump_signal
        )
        self._fail_open.acquire(scope_id, lambda: self._send_request(request))

    def release(self, scope_id: str) -> None:
        self._fail_open.release(scope_id)

    def _release(self, scope_id: str) -> None:
        self._send_request(FileTimerRequest(os.getpid(), scope_id, -1, 0))


class FileTimerServer:
    """Reaps local workers that write expired timers to the FIFO ``file_path``.

    ``max_interval`` is accepted for compatibility; kills happen at the
    deadline whatever its value. ``log_event(name, request)`` is called with
    torch's event names: "watchdog started", "timer expired",
    "kill worker process", "watchdog stopped".

    As in torch, ``_timers`` shows the live timers (a read-only snapshot), and a
    subclass may override ``_reap_worker`` (how an expired worker is reaped) and
    ``is_process_running`` (whether it still is: asked when its request arrives and
    again at its deadline), and ``_run_watchdog()`` is one watchdog pass. Unlike torch,
    a worker that exits before its deadline is noticed at once (its timers end as
    ``worker_gone``), so a worker that has exited is never handed to ``_reap_worker``.
    """

    def __init__(
        self,
        file_path: str,
        run_id: str,
        max_interval: float = 10,
        daemon: bool = True,
        log_event: Callable[[str, FileTimerRequest | None], None] | None = None,
        *,
        mode: int = 0o600,
        reaper: Reaper | None = None,
        signal_children: bool = False,
        capture_stacks: bool = False,
    ) -> None:
        self._file_path = file_path
        self._run_id = run_id
        self._max_interval = max_interval
        self._daemon = daemon
        self._log_event = log_event or (lambda name, request: None)
        self._owns_reaper = reaper is None
        self.reaper = reaper or Reaper(
            signaller=HookedSignaller(self._reap_hook),
            identify_process=self._identify,
            signal_children=signal_children,
            capturer=StackCapturer() if capture_stacks else None,
        )
        self.reaper.add_listener(self._on_event)
        self._source = FifoSource(file_path, self.reaper, mode=mode)
        self._source_open = True
        self._started = False
        self._last_progress_time = int(time.time())
        self._watchdog_stop = threading.Event()
        self._watchdog_thread: threading.Thread | None = None

    @property
    def _request_count(self) -> int:
        """Every well-formed request read, applied or refused (torch counts them all)."""
        return self._source.requests

    @property
    def _timers(self) -> Mapping[tuple[int, str], FileTimerRequest]:
        return timers_view(
            self.reaper,
            lambda view: FileTimerRequest(
                view.pid, view.scope_id, view.expiration_time, view.signal
            ),
        )

    @property
    def malformed_lines(self) -> int:
        return self._source.malformed_lines

    def start(self) -> None:
        logger.info("starting FileTimerServer on %s (run_id=%s)", self._file_path, self._run_id)
        if self._owns_reaper:
            self.reaper.start()
        self._source.start()
        self._started = True
        self._watchdog_stop.clear()
        self._watchdog_thread = threading.Thread(
            target=self._watchdog_loop, name="timer-watchdog", daemon=self._daemon
        )
        self._watchdog_thread.start()
        self._log_event("watchdog started", None)

    def stop(self) -> None:
        logger.info("stopping FileTimerServer on %s", self._file_path)
        self._watchdog_stop.set()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join()
            self._watchdog_thread = None
        # Also when never started: the FIFO was made (and opened) by the constructor,
        # and torch always removes it.
        if self._source_open:
            self._source.stop()
            self._source_open = False
        self._started = False
        if self._owns_reaper:
            self.reaper.stop()
        self._log_event("watchdog stopped", None)

    def _run_watchdog(self) -> None:
        """One pass of torch's watchdog: apply what the FIFO holds, then reap what is due now.

        While the server runs, its reader thread applies each request as it is written,
        so the pass leaves the FIFO to it (two readers would split a line between them).
        """
        if self._source_open and not self._started:
            self._source.drain()
        self.reaper.step()

    def _watchdog_loop(self) -> None:
        # Kills never wait for this loop (the Reaper's thread kills at the deadline).
        # It runs because torch's tests, subclasses and monitoring count on the running
        # server calling _run_watchdog about once per max_interval.
        interval = max(self._max_interval, _MIN_WATCHDOG_INTERVAL)
        while not self._watchdog_stop.is_set():
            try:
                self._run_watchdog()
            except Exception:
                logger.exception("error in the timer watchdog pass")
            self._watchdog_stop.wait(interval)

    def run_once(self) -> None:
        """Apply what is in the FIFO now, reap what is due, then stop (torch's test hook)."""
        self._source.drain()
        self.reaper.step()
        self.stop()

    @staticmethod
    def is_process_running(pid: int) -> bool:
        return identify(pid) is not None

    def register_timers(self, timer_requests: list[FileTimerRequest]) -> None:
        for request in timer_requests:
            self.reaper.apply(
                ArmRequest(
                    request.worker_pid, request.scope_id, request.expiration_time, request.signal
                ),
                FIFO,
            )

    def clear_timers(self, worker_pids: set[int]) -> None:
        for pid in worker_pids:
            self.reaper.clear_worker(pid, reason="cleared by the server")

    def get_expired_timers(self, deadline: float) -> dict[int, list[FileTimerRequest]]:
        return {
            pid: [FileTimerRequest(t.pid, t.scope_id, t.expiration_time, t.signal) for t in timers]
            for pid, timers in self.reaper.expired_by_worker(deadline).items()
        }

    def _reap_worker(self, worker_pid: int, signal: int) -> bool:
        return self.reaper.signal_now(worker_pid, signal)

    def _reap_hook(self, identity: ProcessIdentity, signum: int) -> SignalOutcome | None:
        if not is_overridden(self, "_reap_worker", _ORIGINAL_REAP_WORKER):
            return None
        return reaped(self._reap_worker(identity.pid, signum))

    def _identify(self, pid: int) -> ProcessIdentity | None:
        overridden = is_overridden(self, "is_process_running", _ORIGINAL_IS_PROCESS_RUNNING)
        if overridden and not self.is_process_running(pid):
            return None
        return identify(pid)

    def get_last_progress_time(self) -> int:
        if self.reaper.is_running():
            self._last_progress_time = int(time.time())
        return self._last_progress_time

    def _on_event(self, event: TimerEvent) -> None:
        timer = event.timer
        request = FileTimerRequest(timer.pid, timer.scope_id, timer.expiration_time, timer.signal)
        if event.kind in (EventKind.EXPIRED, EventKind.KILLED, EventKind.WORKER_GONE):
            # Through the module's global, so that a patch of it (as torch's tests do)
            # is what gets called.
            log_debug_info_for_expired_timers(self._run_id, {timer.pid: [request.to_json()]})
            self._log_event("timer expired", request)
        if event.kind == EventKind.KILLED:
            self._log_event("kill worker process", request)


# The methods as defined here; a subclass or a patch that replaces them is honoured.
_ORIGINAL_REAP_WORKER = FileTimerServer._reap_worker
_ORIGINAL_IS_PROCESS_RUNNING = FileTimerServer.is_process_running
