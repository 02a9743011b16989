"""Limits every request passes before a route sees it (contract 7). Each refusal has
a JSON ``detail``, like every other error of the API.

- **Host header.** A page on another site can make a browser on this host send
  requests to 127.0.0.1 under a name the attacker controls (DNS rebinding); the
  browser then treats the answers as that site's. Only the service's own names are
  answered (421 otherwise). Unix-socket requests, which no browser can make, are not
  checked.
- **No NUL in the URL.** No job id, scope, node or cursor holds one (every source
  refuses it), and PostgreSQL cannot compare text with one: ``/timers?job=%00`` and
  ``/jobs/a%00b`` raised in the driver and answered 500. They get 422 at the door.
- **Body size.** A write is a few hundred bytes. A body over 64 KiB gets 413: at once
  when its Content-Length says so, else as soon as that much has been read, so a
  chunked upload cannot grow the service's memory either.
- **No wrong token.** With an admin token configured, a request whose
  ``Authorization`` header is not ``Bearer <that token>`` gets 401, on every route:
  reads stay open without the header (contract 7), but a user with a typo in the token
  is told at the first read, not only when a write fails later. Writes without the
  header are refused by their routes (``app.deps.check_token``), as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access.callers import WRONG_TOKEN_DETAIL, token_matches

__all__ = ["MAX_BODY_BYTES", "BodyLimit", "HostCheck", "NulInUrl", "WrongToken", "host_name"]

MAX_BODY_BYTES = 64 * 1024


async def _send_error(
    send: Send,
    status: int,
    detail: str | list[dict[str, Any]],
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` is ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(name.lower().strip("[]") for name in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "http" or "*" in self.allowed or (server and server[1] is None):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if host_name(header) not in self.allowed:
            shown = header[:100]
            await _send_error(
                send,
                421,
                f"this service does not answer to the host {shown!r}; use one of "
                f"{', '.join(sorted(self.allowed))}, or add it with --allowed-hosts",
            )
            return
        await self.app(scope, receive, send)


class NulInUrl:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The path arrives decoded; the query string raw, so its NUL is "%00".
        if scope["type"] == "http":
            where = "path" if "\x00" in scope["path"] else None
            if where is None and b"%00" in scope.get("query_string", b""):
                where = "query"
            if where is not None:
                # In the shape of every other 422 (FastAPI's validation errors, as the
                # OpenAPI schema documents them), so a client parses it alike.
                message = (
                    "the URL holds a NUL character (%00); no job id, scope, node or other "
                    "value the service keeps contains one: remove it"
                )
                await _send_error(
                    send, 422, [{"loc": [where], "msg": message, "type": "value_error"}]
                )
                return
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over {self.limit} bytes; a timer request is far smaller"
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit():
            if int(declared) > self.limit:
                await _send_error(send, 413, too_large)
                return
            if b"transfer-encoding" not in headers:
                # The server hands the app exactly Content-Length bytes, never more:
                # nothing to count, and no wrapper on every read.
                await self.app(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException: FastAPI passes it on from the body reader to its
                    # handler, which answers with the JSON detail.
                    raise HTTPException(413, detail=too_large)
            return message

        await self.app(scope, counting_receive, send)


class WrongToken:
    """Only added when a token is configured (``app.main``). Without one there is no
    right token for a header to miss: the service ignores ``Authorization`` everywhere,
    writes included, so clients that always send one (a worker's ``HttpTimerClient``,
    a scraper) keep working against a service started without a token, as before."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One pass over the header list and nothing more for a request without the
        # header (the dashboard, most reads): POST /timers is benchmarked. The first
        # Authorization header counts, as it does for the routes (request.headers.get).
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"authorization":
                    if not token_matches(self.token, value.decode("latin-1")):
                        await _send_error(
                            send, 401, WRONG_TOKEN_DETAIL, ((b"www-authenticate", b"Bearer"),)
                        )
                        return
                    break
        await self.app(scope, receive, send)
