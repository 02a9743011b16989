"""The webhook's bounds against a hostile receiver: an answer that never ends is read to
64 KiB and dropped, not read forever; one that trickles in a byte at a time (each read
inside its timeout) is cut off at the send's total limit."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from app.notify.webhook import post_signed


def test_an_endless_answer_is_cut_short() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sent = [0]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (4096, b"x" * 4096)
            try:
                while sent[0] < 64 << 20:  # at most 64 MiB, should the client read on
                    connection.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass  # the client hung up: what the test wants

    server = threading.Thread(target=serve)
    server.start()
    try:
        outcome = post_signed(f"http://127.0.0.1:{port}/", "s" * 32, "d", b"{}")
    finally:
        server.join(30)
        listener.close()
    assert outcome.delivered
    # Read to its bound, then dropped (the socket buffers hold a few MiB at most).
    assert sent[0] < 16 << 20, sent[0]


def _trickling(head: bytes, drip: bytes) -> tuple[int, list[int], threading.Thread, socket.socket]:
    """A receiver that sends ``head``, then ``drip`` a byte each 0.1 s, each byte well
    inside the read timeout, until the client hangs up (at most 30 s of it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    dripped = [0]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(head)
            try:
                for index in range(300):
                    time.sleep(0.1)
                    connection.sendall(drip[index % len(drip) : index % len(drip) + 1])
                    dripped[0] += 1
            except OSError:
                pass  # the client hung up: what the test wants

    server = threading.Thread(target=serve)
    server.start()
    return listener.getsockname()[1], dripped, server, listener


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        # The answer's headers, a byte at a time: never a whole head to judge.
        (b"HTTP/1.1 200 OK\r\n", b"x-slow: abcdefghijklmnopqrstuvwxyz\r\n"),
        # A whole head, then a body that never ends, a byte at a time.
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n", b"x"),
    ],
    ids=["headers", "body"],
)
def test_a_trickling_receiver_is_cut_off_at_the_send_limit(head: bytes, drip: bytes) -> None:
    port, dripped, server, listener = _trickling(head, drip)
    try:
        outcome = post_signed(f"http://127.0.0.1:{port}/", "s" * 32, "d", b"{}", limit=1.0)
    finally:
        server.join(40)
        listener.close()
    # Hung up at the limit (about 10 bytes in), not read on byte by byte.
    assert dripped[0] < 100, dripped[0]
    assert not outcome.delivered
    assert outcome.error is not None and "timed out" in outcome.error, outcome
    assert outcome.retry


def test_a_url_with_a_bad_port_fails_once_not_retried() -> None:
    """One stored before POST /channels checked ports: refused as it is, never retried
    (it raised InvalidURL, with a traceback, on every attempt)."""
    outcome = post_signed("https://user:pw@127.0.0.1:8x/", "s" * 32, "d", b"{}")
    assert (outcome.delivered, outcome.retry) == (False, False)
    assert outcome.error is not None and "not valid" in outcome.error
    assert "pw" not in outcome.error and "8x" not in outcome.error
