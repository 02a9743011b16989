"""The generic signed webhook (contract 11): one POST of a notification's JSON body.

Receivers verify it: ``X-Timer-Service-Signature: t=<unix>,v1=<hex>`` where the hex is
HMAC-SHA256, keyed with the channel's secret, of ``"<t>.<body>"``; they drop a repeat by
``X-Timer-Service-Delivery``, the same on every retry of one delivery.

Safe by default, since a root service must not become a proxy for anyone:

- a redirect is followed only to the same scheme, host and port (at most three);
  anything else is an error, never a request to another host;
- every request has a timeout and the response is read to at most ``_READ_LIMIT``
  bytes, so a receiver that streams forever costs nothing;
- errors name what happened, never the URL (its path or query often is the secret).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

__all__ = ["Outcome", "post_json", "post_signed", "signature"]

_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
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


def post_signed(url: str, secret: str | None, delivery_id: str, body: bytes) -> Outcome:
    """POST ``body`` to ``url``, signed with ``secret`` (unsigned without one)."""
    headers = {"x-timer-service-delivery": delivery_id}
    if secret:
        headers["x-timer-service-signature"] = signature(secret, int(time.time()), body)
    return post_json(url, body, headers)


def post_json(url: str, body: bytes, headers: dict[str, str] | None = None) -> Outcome:
    """POST the JSON ``body`` to ``url``, safely (see above), with ``headers`` too."""
    headers = {"content-type": "application/json", "user-agent": _USER_AGENT, **(headers or {})}
    target = url
    try:
        with httpx.Client(
            timeout=_TIMEOUT, follow_redirects=False, trust_env=False, verify=_tls()
        ) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                with client.stream("POST", target, content=body, headers=headers) as response:
                    _read_bounded(response)
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
    except httpx.HTTPError as error:
        # The exception's name and the system's reason, never httpx's text (it may
        # carry the URL).
        cause = error.__cause__ or error.__context__
        reason = getattr(cause, "strerror", None) or type(cause or error).__name__
        return Outcome(False, f"{type(error).__name__}: {reason}")


def _read_bounded(response: httpx.Response) -> None:
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= _READ_LIMIT:
            return


def _judged(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True)
    # A receiver busy or broken may take it later; one that refuses the request
    # (400, 401, 403, 404, 410, ...) will refuse it again: no point retrying.
    retry = status >= 500 or status in (408, 425, 429)
    return Outcome(False, f"HTTP {status}", retry=retry)
