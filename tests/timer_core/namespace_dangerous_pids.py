"""Run inside a private PID namespace (see test_dangerous_pids.py): never on the bare machine.

pid 1 here is this driver. It starts a timer server (a child), asks it to kill
pids 0, -1, 1, the server itself, its parent, its process group, and one real
sleeper as a positive control; then checks who is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

SERVER = """
import json, sys, time
import timer_core as timer
fifo, log = sys.argv[1], sys.argv[2]
server = timer.FileTimerServer(fifo, "ns")
out = open(log, "a")
def record(event):
    out.write(json.dumps([event.kind, event.timer.pid]) + "\\n")
    out.flush()
server.reaper.add_listener(record)
server.start()
print("ready", flush=True)
time.sleep(600)
"""


def main() -> None:
    assert os.getpid() == 1, "this script must run as pid 1 of a private PID namespace"
    workdir = sys.argv[1]
    fifo, log = os.path.join(workdir, "t.fifo"), os.path.join(workdir, "events.log")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, fifo, log], stdout=subprocess.PIPE, start_new_session=True
    )
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    hostile = [0, -1, 1, server.pid, os.getpid(), -server.pid, -os.getpgid(0)]
    with open(fifo, "w") as pipe:
        for pid in [*hostile, sleeper.pid]:
            line = {
                "version": 1,
                "pid": pid,
                "scope_id": f"p{pid}",
                "expiration_time": time.time() - 1,
                "signal": signal.SIGKILL,
            }
            pipe.write(json.dumps(line) + "\n")
    assert sleeper.wait(30) == -signal.SIGKILL, "positive control: the sleeper must be killed"
    time.sleep(0.5)
    assert server.poll() is None, f"the server died: {server.returncode}"
    with open(log) as events:
        seen = [json.loads(row) for row in events]
    refused = sorted(pid for kind, pid in seen if kind == "refused")
    assert refused == sorted(hostile), f"refused {refused}, expected {sorted(hostile)}"
    assert ["killed", sleeper.pid] in seen
    server.kill()
    server.wait()
    print("OK: refused", refused, "and killed only", sleeper.pid)


if __name__ == "__main__":
    main()
