"""``HttpTimerClient``: a ``TimerClient`` that talks to the timer-service REST API.

Three rules keep its calls from failing for nothing (contract 14):

- **202 is done.** While the service's database is away, a write is applied and
  answered 202 (``recorded: false``): the timer is armed or released, only its record
  waits. The client returns, logs a warning and counts it (``not_recorded``).
- **The service answers first.** The client's timeout is longer than the longest the
  service waits before answering (its ``--commit-timeout``, 5 s by default), so it
  never gives up on an answer that is on its way.
- **A connection the service closed is retried once.** The client keeps an idle
  connection for less time than the service does (5 s), and if the service still
  closed it before answering (a restart, a race at the expiry), the request is sent
  again once on a new connection: an arm repeated is a heartbeat, a release repeated
  finds nothing (404, which is fine).

And one choice, the caller's: ``fail_open=True`` goes on when the service cannot be
reached (``timer_core.fail_open`` says what it does and what it costs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal as signal_module
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from . import log_names
from .api import TimerClient
from .diagnosis.stack_capture import dump_stack_on as dump_stack_on_signal
from .engine.labels import Labels, labels_from_environ
from .fail_open import FailOpen, FailOpenCounts, ServerUnreachable

__all__ = ["HttpTimerClient", "TimerServiceError", "TimerServiceUnreachable"]

logger = logging.getLogger(log_names.HTTP_CLIENT)

# Longer than the service's --commit-timeout (5 s) with room for a busy event loop.
_TIMEOUT_SECONDS = 15.0
# Shorter than the service's keep-alive (5 s): the client drops an idle connection first.
_KEEPALIVE_SECONDS = 2.0
# The connection was closed or broken before an answer came: safe to send once more.
_CLOSED_BEFORE_ANSWER = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# The service was not there, went away, or did not answer in time. Not among them:
# a URL or request this client got wrong (UnsupportedProtocol, LocalProtocolError).
_UNREACHABLE = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


def _http_url_and_socket(base_url: str) -> tuple[str, str | None]:
    """``unix:///run/ts.sock`` and ``http+unix://%2Frun%2Fts.sock/prefix`` name the
    service's Unix socket; anything else is an ordinary HTTP URL."""
    parts = urlsplit(base_url)
    if parts.scheme == "unix":
        return "http://localhost", parts.path
    if parts.scheme == "http+unix":
        return f"http://localhost{parts.path}", unquote(parts.netloc)
    return base_url, None


class TimerServiceError(ConnectionError):
    """The service could not be reached or refused the request (the message says why)."""


class TimerServiceUnreachable(TimerServiceError, ServerUnreachable):
    """The service could not be reached, did not answer in time, or answered 5xx: what
    ``fail_open=True`` goes on after. A 4xx (the request's fault) is a
    ``TimerServiceError`` only, raised in both modes."""


class HttpTimerClient(FailOpenCounts, TimerClient):
    """Arms and releases this process's timers through ``POST /timers``.

    ``timer.configure(HttpTimerClient("http://127.0.0.1:8000"))`` then
    ``with timer.expires(after=60): ...`` works as with torch's clients.
    Over the service's Unix socket (``serve --uds PATH``), pass ``unix:///PATH`` or
    ``http+unix://%2FPATH``: the service then knows this worker's uid from the kernel.
    Re-acquiring an active scope moves its deadline (a heartbeat).
    ``dump_stack_on=signal.SIGUSR2`` lets the service ask this worker for its own
    Python stack (faulthandler) when py-spy cannot read it.
    Which rank of which job this worker is goes with every acquisition: ``labels``, or
    by default what torchrun put in the environment (TORCHELASTIC_RUN_ID, RANK,
    LOCAL_RANK, WORLD_SIZE), read when the client is made.

    ``fail_open`` decides what a request that cannot reach the service does (refused or
    lost connections, timeouts, 5xx answers). False (the default, torch's behaviour):
    it raises ``TimerServiceUnreachable`` and the step dies with it; a worker never runs
    unwatched. True: it logs a WARNING when the outage begins and one when it ends,
    counts (``failed_requests``, ``outages``), and the block runs with no timer until
    the service answers again; the next request that reaches it arms as usual, and
    releases that could not be sent are sent then. A hang during the outage is not
    killed. A 4xx (bad input, 401, 403, 409, 429) raises ``TimerServiceError`` in both
    modes. A service that takes connections but does not answer costs each request
    ``timeout`` seconds, fail open too: keep it above the service's --commit-timeout.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        signal: int = signal_module.SIGKILL,
        timeout: float = _TIMEOUT_SECONDS,
        dump_stack_on: int | None = None,
        labels: Labels | None = None,
        fail_open: bool = False,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.signal = signal
        self.dump_signal = dump_stack_on
        self.labels = labels if labels is not None else _environment_labels()
        if dump_stack_on is not None:
            dump_stack_on_signal(dump_stack_on)
        http_url, socket_path = _http_url_and_socket(self.base_url)
        transport = httpx.HTTPTransport(
            uds=socket_path, limits=httpx.Limits(keepalive_expiry=_KEEPALIVE_SECONDS)
        )
        self._http = httpx.Client(
            base_url=http_url, headers=headers, timeout=timeout, transport=transport
        )
        # Writes applied by the service but not recorded yet (202): its database was away.
        self.not_recorded = 0
        self._fail_open = FailOpen(
            enabled=fail_open,
            server=f"timer service at {self.base_url}",
            logger=logger,
            send_release=self._release,
        )

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self._fail_open.acquire(
            scope_id, lambda: self._arm(scope_id, {"expiration_time": expiration_time})
        )

    def acquire_auto(self, scope_id: str) -> None:
        """Arm with the timeout the service learned for this scope of this job (the
        initial timeout until it has seen enough releases): ``expires(after="auto")``."""
        self._fail_open.acquire(scope_id, lambda: self._arm(scope_id, {"expires_in": "auto"}))

    def _arm(self, scope_id: str, deadline: dict[str, Any]) -> None:
        self._post(
            "/timers",
            {
                "pid": os.getpid(),
                "scope_id": scope_id,
                **deadline,
                "signal": self.signal,
                **({"dump_signal": self.dump_signal} if self.dump_signal else {}),
                # Each label under its own name, as POST /timers takes it.
                **{
                    name: value
                    for name, value in dataclasses.asdict(self.labels).items()
                    if value is not None
                },
            },
        )

    def release(self, scope_id: str) -> None:
        self._fail_open.release(scope_id)

    def _release(self, scope_id: str) -> None:
        # 404 means the timer already ended (it expired, or was released): nothing to undo.
        self._post("/timers/release", {"pid": os.getpid(), "scope_id": scope_id}, ok_404=True)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any], ok_404: bool = False) -> None:
        try:
            try:
                response = self._http.post(path, json=body)
            except _CLOSED_BEFORE_ANSWER:
                # The service closed the connection before answering (it restarted, or
                # it let the connection go as this request went out): once more, on a
                # new connection. Both writes are safe to repeat.
                response = self._http.post(path, json=body)
        except _UNREACHABLE as error:
            if _denied(error):
                raise TimerServiceError(
                    f"timer service at {self.base_url} may not be opened by this user "
                    f"({error}); use a socket or URL this user may reach"
                ) from error
            raise TimerServiceUnreachable(
                f"timer service at {self.base_url} is unreachable ({error}); "
                "is `timer-service serve` running?"
            ) from error
        except httpx.HTTPError as error:
            raise TimerServiceError(
                f"timer service at {self.base_url} could not be asked ({error}); check the URL"
            ) from error
        if response.status_code == 202:
            self.not_recorded += 1
            logger.warning(
                "timer service applied %s but could not record it yet: %s",
                path,
                _detail(response),
            )
            return
        if response.is_success or (ok_404 and response.status_code == 404):
            return
        if response.is_server_error:
            raise TimerServiceUnreachable(
                f"timer service at {self.base_url} failed {path} with "
                f"{response.status_code}: {_detail(response)}"
            )
        raise TimerServiceError(
            f"timer service refused {path} with {response.status_code}: {_detail(response)}"
        )


def _denied(error: BaseException) -> bool:
    """Whether the connection failed for want of permission (a Unix socket this user
    may not open): the caller's to fix, not an outage."""
    cause: BaseException | None = error
    seen: set[int] = set()  # a chain set by hand may loop
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, PermissionError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text


def _environment_labels() -> Labels:
    """This process's torchrun labels, checked as the service checks a worker's.

    ``restart_count`` stays unsent: torchrun sets it for every worker, a service older
    than the label refuses a body that names it (422), and every service that knows it
    reads it from the worker's environment itself. Given in ``labels=``, it is sent."""
    labels = labels_from_environ(
        b"\0".join(key + b"=" + value for key, value in os.environb.items())
    )
    return dataclasses.replace(labels, restart_count=None)
