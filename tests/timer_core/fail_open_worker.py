"""A worker for the fail-open tests, run as its own process:
``python fail_open_worker.py http|fifo TARGET open|closed``.

It builds one client (``HttpTimerClient`` on the URL, or ``FileTimerClient`` on the
FIFO; ``signal=0``, so a test that goes wrong observes rather than kills) with
``fail_open`` as asked, and leaves logging unconfigured, as a training script that never
thought of it would: Python then prints the client's WARNINGs to stderr. It reads one
command a line from stdin and answers each with one JSON line of its counters:

- ``enter SCOPE``: arm SCOPE for 600 s (the test looks at the server meanwhile);
- ``leave SCOPE``: release it;
- ``steps N``: N whole ``expires`` blocks of the scope ``step``.

At the end of stdin it exits 0. A request that raises kills it, traceback on stderr,
as it kills a training step.
"""

from __future__ import annotations

import json
import sys
import time

import timer_core as timer

__all__: list[str] = []


def main() -> None:
    kind, target, mode = sys.argv[1:4]
    fail_open = mode == "open"
    client: timer.HttpTimerClient | timer.FileTimerClient
    if kind == "http":
        client = timer.HttpTimerClient(target, signal=0, timeout=5, fail_open=fail_open)
    else:
        client = timer.FileTimerClient(target, signal=0, fail_open=fail_open)
    for line in sys.stdin:
        command, argument = line.split()
        if command == "enter":
            client.acquire(argument, time.time() + 600)
        elif command == "leave":
            client.release(argument)
        else:
            for _ in range(int(argument)):
                with timer.expires(after=600, scope="step", client=client):
                    pass
        answer = {"failed_requests": client.failed_requests, "outages": client.outages}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
