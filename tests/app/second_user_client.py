"""A stdlib-only HTTP client that the tests run as a second, unprivileged user.

That user cannot run the project's venv (its interpreter lives under /root), so this
runs on Debian's /usr/bin/python3 with nothing but the standard library:

    second_user_client.py tcp://127.0.0.1:8000 POST /timers '{"pid": 1, ...}' [HEADER=VALUE ...]
    second_user_client.py unix:///run/ts.sock GET /timers/1/stack -

It prints one JSON line: {"status": ..., "body": ...}.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from urllib.parse import urlsplit


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def main(argv: list[str]) -> None:
    target, method, path = argv[:3]
    body = argv[3] if len(argv) > 3 and argv[3] != "-" else None
    headers = dict(item.split("=", 1) for item in argv[4:] if "=" in item)
    parts = urlsplit(target)
    connection: http.client.HTTPConnection
    if parts.scheme == "unix":
        connection = UnixConnection(parts.path)
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    if body is not None:
        headers.setdefault("content-type", "application/json")
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    print(json.dumps({"status": response.status, "body": text}))


if __name__ == "__main__":
    main(sys.argv[1:])
