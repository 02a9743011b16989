"""``HttpTimerClient``: a ``TimerClient`` that talks to the timer-service REST API."""

from __future__ import annotations

import os
import signal as signal_module
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .api import TimerClient
from .diagnosis.stack_capture import dump_stack_on as dump_stack_on_signal
from .engine.labels import Labels, labels_from_environ

__all__ = ["HttpTimerClient", "TimerServiceError"]


def _http_url_and_transport(base_url: str) -> tuple[str, httpx.HTTPTransport | None]:
    """``unix:///run/ts.sock`` and ``http+unix://%2Frun%2Fts.sock/prefix`` name the
    service's Unix socket; anything else is an ordinary HTTP URL."""
    parts = urlsplit(base_url)
    if parts.scheme == "unix":
        return "http://localhost", httpx.HTTPTransport(uds=parts.path)
    if parts.scheme == "http+unix":
        socket_path = unquote(parts.netloc)
        return f"http://localhost{parts.path}", httpx.HTTPTransport(uds=socket_path)
    return base_url, None


class TimerServiceError(ConnectionError):
    """The service could not be reached or refused the request (the message says why)."""


class HttpTimerClient(TimerClient):
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
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        signal: int = signal_module.SIGKILL,
        timeout: float = 5.0,
        dump_stack_on: int | None = None,
        labels: Labels | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.signal = signal
        self.dump_signal = dump_stack_on
        self.labels = labels if labels is not None else _environment_labels()
        if dump_stack_on is not None:
            dump_stack_on_signal(dump_stack_on)
        http_url, transport = _http_url_and_transport(self.base_url)
        self._http = httpx.Client(
            base_url=http_url, headers=headers, timeout=timeout, transport=transport
        )

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self._post(
            "/timers",
            {
                "pid": os.getpid(),
                "scope_id": scope_id,
                "expiration_time": expiration_time,
                "signal": self.signal,
                **({"dump_signal": self.dump_signal} if self.dump_signal else {}),
                **{
                    name: value
                    for name, value in (
                        ("job_id", self.labels.job_id),
                        ("rank", self.labels.rank),
                        ("local_rank", self.labels.local_rank),
                        ("world_size", self.labels.world_size),
                    )
                    if value is not None
                },
            },
        )

    def release(self, scope_id: str) -> None:
        # 404 means the timer already ended (it expired, or was released): nothing to undo.
        self._post("/timers/release", {"pid": os.getpid(), "scope_id": scope_id}, ok_404=True)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any], ok_404: bool = False) -> None:
        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as error:
            raise TimerServiceError(
                f"timer service at {self.base_url} is unreachable ({error}); "
                "is `timer-service serve` running?"
            ) from error
        if response.is_success or (ok_404 and response.status_code == 404):
            return
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise TimerServiceError(
            f"timer service refused {path} with {response.status_code}: {detail}"
        )


def _environment_labels() -> Labels:
    """This process's torchrun labels, checked as the service checks a worker's."""
    return labels_from_environ(b"\0".join(key + b"=" + value for key, value in os.environb.items()))
