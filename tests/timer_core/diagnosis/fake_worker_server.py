"""A hostile worker's own "worker server" on a Unix socket (standard library only: the
second user runs it with Debian's python3). It answers ``ping`` like torch, so that it
is found, and then misbehaves as ``mode`` says:

- ``silent``: accepts, reads, never answers anything;
- ``drip``: answers one byte every 10 ms, forever;
- ``huge``: announces and sends 10 MB;
- ``endless-head``: a status line, then headers without end;
- ``not-http``: answers everything (``ping`` too) with bytes that are not HTTP;
- ``not-a-traceback``: a well-formed 200 whose body is not a faulthandler traceback;
- ``bad-json``: a real-looking traceback, and ``fr_trace_json`` that is not JSON;
- ``swap-to PATH``: binds its socket, then replaces its path by a symlink to ``PATH``
  (another user's server) and answers nothing itself.

    python3 fake_worker_server.py SOCKET MODE [PATH]

A SOCKET starting with ``@`` is an abstract name.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

TRACEBACK = b'Thread 0x00007f00 (most recent call first):\n  File "w.py", line 3 in step\n'


def answer(body: bytes, status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def serve(connection: socket.socket, mode: str) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        if not chunk:
            return
        head += chunk
    handler = head.split(b" ")[1].rsplit(b"/", 1)[-1]
    if mode == "silent" or mode.startswith("swap-to"):
        time.sleep(600)
    if mode == "not-http":
        connection.sendall(b"\x00\xffSSH-2.0-not-http\r\n\r\n")
    elif handler == b"ping":
        connection.sendall(answer(b"pong"))
    elif mode == "drip":
        while True:
            connection.sendall(b"H")
            time.sleep(0.01)
    elif mode == "huge":
        size = 10 * 1024 * 1024
        connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        connection.sendall(b"x" * size)
    elif mode == "endless-head":
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        while True:
            connection.sendall(b"X-More: yes\r\n" * 1000)
    elif mode == "not-a-traceback":
        connection.sendall(answer(b"<html>totally a stack</html>"))
    elif handler == b"dump_traceback":
        connection.sendall(answer(TRACEBACK))
    else:
        connection.sendall(answer(b"{not json"))
    connection.close()


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + path[1:] if path.startswith("@") else path)
    listener.listen(16)
    if mode == "swap-to":
        os.unlink(path)
        os.symlink(sys.argv[3], path)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection, mode), daemon=True).start()


if __name__ == "__main__":
    main()
