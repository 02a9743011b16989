"""A real webhook receiver on loopback for the notification tests: an HTTP server on a
thread of its own that checks each request's signature as a user's receiver would
(README, "Verify a webhook"), and keeps what it got. A test says what it answers
(``statuses``: a status per request, then 200), and may hold every answer back
(``hold``) to catch a sender mid-send."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["Received", "Receiver", "receiver", "start_receiver", "verified"]


def verified(secret: str, signature: str, body: bytes) -> bool:
    """The README's check: ``t=<unix>,v1=<hex>`` over ``"<t>.<body>"``."""
    fields = dict(part.split("=", 1) for part in signature.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"])


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # unix time of receipt
    port: int = 0  # the sender's side of the connection (which process sent it)

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def delivery_id(self) -> str:
        return self.headers["x-timer-service-delivery"]


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    got: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    headers_out: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Answers wait while this is clear: the request has arrived, its sender waits on.
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.released.set()

    def hold(self) -> None:
        """Hold every answer back until ``release``."""
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= count:
                    return list(self.got)
            time.sleep(0.02)
        with self.lock:
            return list(self.got)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            if len(body) != length:
                return  # its sender died mid-request: nothing was delivered
            with receiver.lock:
                receiver.got.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.time(),
                        int(self.client_address[1]),
                    )
                )
            receiver.released.wait(60)
            try:
                self.send_response(receiver.answer())
                for name, value in receiver.headers_out.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # its sender died while the answer was held back

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def start_receiver(port: int = 0) -> Receiver:
    """A receiver on ``port`` of 127.0.0.1 (0: any free one)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    receiver = Receiver(server)
    server.RequestHandlerClass = _handler(receiver)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = start_receiver()
    yield running
    running.close()
