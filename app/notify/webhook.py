"""The generic signed webhook (contract 11): one POST of a notification's JSON body.

Receivers verify it: ``X-Timer-Service-Signature: t=<unix>,v1=<hex>`` where the hex is
HMAC-SHA256, keyed with the channel's secret, of ``"<t>.<body>"``; they drop a repeat by
``X-Timer-Service-Delivery``, the same on every retry of one delivery.

Safe by default, since a root service must not become a proxy for anyone:

- a redirect is followed only to the same scheme, host and port (at most three);
  anything else is an error, never a request to another host;
- every request has a timeout and the response is read to at most ``_READ_LIMIT``
  bytes, so a receiver that streams forever costs nothing;
- a whole send (connecting, each redirect, the answer) ends within ``limit`` seconds
  (``SEND_LIMIT`` at most): httpx's timeouts bound each read, so a receiver answering
  a byte a second would hold a send for as long as it likes; at the limit the
  connection is shut down under the read (``_Deadline``). Only the name lookup is
  outside it (the system's resolver has its own timeouts);
- errors name what happened, never the URL (its path or query often is the secret).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

__all__ = ["SEND_LIMIT", "Outcome", "post_json", "post_signed", "signature"]

# The longest one send takes, all of it: the sender's lease on a delivery must outlast it
# (``Sender`` derives its limit from its lease), or another node would send it again.
SEND_LIMIT = 15.0
_READ_TIMEOUT = 10.0
_CONNECT_TIMEOUT = 5.0
_READ_LIMIT = 64 * 1024
_MAX_REDIRECTS = 3
_USER_AGENT = "timer-service-webhook/1"


class _NoRequestLines(logging.Filter):
    """httpx logs every request with its whole URL at INFO ("HTTP Request: POST
    https://hooks.example/T000/B000/XXXX ..."): in the service, a channel's URL is a
    secret, so those lines are dropped (the sender logs outcomes by channel id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request:")


logging.getLogger("httpx").addFilter(_NoRequestLines())


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went: ``delivered``, or not with ``error`` (no URL in it) and
    whether trying again could help (``retry``)."""

    delivered: bool
    error: str | None = None
    retry: bool = True


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context (the CA bundle httpx trusts) for every send: making one per
    client loads the bundle each time, 15 ms, three quarters of a webhook's cost."""
    return httpx.create_ssl_context()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value: ``t=<timestamp>,v1=<hex hmac-sha256 of "t.body">``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class _Deadline:
    """Shuts a send's connections down once ``limit`` seconds have passed, waking a read
    blocked on them. httpx tells each new connection through its ``trace`` extension;
    a duplicate of its socket is kept (TLS replaces the socket object, not the
    connection), and shutting that down ends the connection under every holder."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.at = time.monotonic() + limit
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, limit), self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()
        with self._lock:
            for held in self._sockets:
                held.close()
            self._sockets.clear()

    def left(self) -> float:
        return self.at - time.monotonic()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith("connect_tcp.complete"):
            return
        stream = info.get("return_value")
        live = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(live, socket.socket):
            return
        with self._lock:
            self._sockets.append(live.dup())
            if self.passed:
                self._shut(self._sockets[-1])

    def _cut(self) -> None:
        with self._lock:
            self.passed = True
            for held in self._sockets:
                self._shut(held)

    @staticmethod
    def _shut(held: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed already: nothing left to wake
            held.shutdown(socket.SHUT_RDWR)


def post_signed(
    url: str, secret: str | None, delivery_id: str, body: bytes, limit: float = SEND_LIMIT
) -> Outcome:
    """POST ``body`` to ``url``, signed with ``secret`` (unsigned without one), all of it
    within ``limit`` seconds."""
    headers = {"x-timer-service-delivery": delivery_id}
    if secret:
        headers["x-timer-service-signature"] = signature(secret, int(time.time()), body)
    return post_json(url, body, headers, limit)


def post_json(
    url: str, body: bytes, headers: dict[str, str] | None = None, limit: float = SEND_LIMIT
) -> Outcome:
    """POST the JSON ``body`` to ``url``, safely (see above), with ``headers`` too, all of
    it within ``limit`` seconds (``SEND_LIMIT`` at most)."""
    headers = {"content-type": "application/json", "user-agent": _USER_AGENT, **(headers or {})}
    limit = min(limit, SEND_LIMIT)
    timeout = httpx.Timeout(min(_READ_TIMEOUT, limit), connect=min(_CONNECT_TIMEOUT, limit))
    target = url
    deadline = _Deadline(limit)
    try:
        with (
            deadline,
            httpx.Client(
                timeout=timeout, follow_redirects=False, trust_env=False, verify=_tls()
            ) as client,
        ):
            for _ in range(_MAX_REDIRECTS + 1):
                with client.stream(
                    "POST",
                    target,
                    content=body,
                    headers=headers,
                    extensions={"trace": deadline.trace},
                ) as response:
                    _read_bounded(response, deadline)
                    status = response.status_code
                    location = response.headers.get("location")
                if status in (307, 308) and location:
                    following = urljoin(target, location)
                    if _origin(following) != _origin(url):
                        return Outcome(
                            False,
                            f"HTTP {status}: redirected to another host, not followed",
                            retry=False,
                        )
                    target = following
                    continue
                return _judged(status)
            return Outcome(False, f"more than {_MAX_REDIRECTS} redirects", retry=False)
    except httpx.TimeoutException:
        return Outcome(False, "timed out")
    except httpx.InvalidURL:
        # One stored before POST /channels checked ports: it will never do.
        return Outcome(False, "the URL is not valid (its port?): give the channel a new one", False)
    except httpx.HTTPError as error:
        if deadline.passed:
            return Outcome(False, f"timed out: the whole send passed {limit:g} s")
        # The exception's name and the system's reason, never httpx's text (it may
        # carry the URL).
        cause = error.__cause__ or error.__context__
        reason = getattr(cause, "strerror", None) or type(cause or error).__name__
        return Outcome(False, f"{type(error).__name__}: {reason}")


def _read_bounded(response: httpx.Response, deadline: _Deadline) -> None:
    """Read the answer to ``_READ_LIMIT`` bytes, and only while the send has time left
    (a read that blocks past it is ended by ``deadline``)."""
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= _READ_LIMIT:
            return
        if deadline.left() <= 0:
            raise httpx.ReadTimeout("the whole send took too long")


def _judged(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True)
    # A receiver busy or broken may take it later; one that refuses the request
    # (400, 401, 403, 404, 410, ...) will refuse it again: no point retrying.
    retry = status >= 500 or status in (408, 425, 429)
    return Outcome(False, f"HTTP {status}", retry=retry)
