"""A flood of arm + release that the tests run as a second, unprivileged user, on
Debian's /usr/bin/python3 with the standard library only (see second_user_client.py):

    second_user_flood.py tcp://127.0.0.1:8000 PID [CONNECTIONS] < control

Until its standard input closes (at most a minute), each of CONNECTIONS threads arms a
timer for PID with a new scope and releases it, over one kept-alive connection, as fast
as the service answers. It prints
one JSON line: the statuses of the arms and releases, how many 429s carried a
Retry-After, the first 429's detail, and the seconds it ran.
"""

from __future__ import annotations

import collections
import http.client
import json
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit


def flood(
    host: str, port: int, pid: int, stop: threading.Event, prefix: str, found: dict[str, Any]
) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"content-type": "application/json"}
    number = 0
    while not stop.is_set():
        number += 1
        scope = f"{prefix}-{number}"
        arm = {"pid": pid, "scope_id": scope, "expires_in": 60}
        connection.request("POST", "/timers", json.dumps(arm), headers)
        response = connection.getresponse()
        text = response.read().decode()
        with found["lock"]:
            found["arms"][response.status] += 1
            if response.status == 429:
                found["retry_after"] += response.getheader("retry-after") is not None
                found.setdefault("detail", json.loads(text)["detail"])
        if response.status not in (200, 201):
            continue
        release = {"pid": pid, "scope_id": scope}
        connection.request("POST", "/timers/release", json.dumps(release), headers)
        response = connection.getresponse()
        response.read()
        with found["lock"]:
            found["releases"][response.status] += 1


def main(argv: list[str]) -> None:
    target, pid = argv[0], int(argv[1])
    connections = int(argv[2]) if len(argv) > 2 else 4
    parts = urlsplit(target)
    found: dict[str, Any] = {
        "lock": threading.Lock(),
        "arms": collections.Counter(),
        "releases": collections.Counter(),
        "retry_after": 0,
    }
    start = time.monotonic()
    stop = threading.Event()
    threads = [
        threading.Thread(target=flood, args=(parts.hostname, parts.port, pid, stop, f"c{n}", found))
        for n in range(connections)
    ]
    for thread in threads:
        thread.start()
    # Until the test closes our standard input; a minute at most if it never does.
    limit = threading.Timer(60, stop.set)
    limit.daemon = True
    limit.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join()
    del found["lock"]
    found["seconds"] = time.monotonic() - start
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1:])
