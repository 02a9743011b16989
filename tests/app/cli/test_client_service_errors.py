"""Exit 5 for a service that answers but cannot serve: a 503 (the service's answer while
its database is away: ``{"detail": ...}``) with its detail on one line, and a server at
``--url`` that is not the timer service (a web page where JSON was asked for).

The real service's 503 needs its database taken away mid-run (tests/reliability does
that); here a small HTTP server of the standard library answers as it does, since
what is tested is the client's reading of the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from tests.app.cli.client_cli import cli_many

DETAIL = "the database is unavailable (OperationalError): history cannot be read; retry later"


class Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/timers"):
            body, status, kind = json.dumps({"detail": DETAIL}), 503, "application/json"
        else:
            body, status, kind = "<html><body>It works!</body></html>", 200, "text/html"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_503_and_a_server_that_is_not_the_service_are_exit_5(url: str) -> None:
    runs = cli_many({"503": ["timers", "--url", url], "html": ["nodes", "--url", url]})
    down = runs["503"]
    assert down.returncode == 5, down.stderr
    assert down.stderr.strip() == (
        f"timer-service timers: the service answered 503 Service Unavailable: {DETAIL}"
    )
    other = runs["html"]
    assert other.returncode == 5, other.stderr
    assert f"{url} answered /nodes with something that is not JSON" in other.stderr
    assert "is it the timer service? Check --url" in other.stderr
    assert down.stdout == other.stdout == ""
