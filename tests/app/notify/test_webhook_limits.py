"""The webhook's bounds against a hostile receiver: an answer that never ends is read to
64 KiB and dropped, not read forever."""

from __future__ import annotations

import socket
import threading

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
