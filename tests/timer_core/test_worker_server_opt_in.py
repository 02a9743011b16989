"""Opting in to torch's worker server (issue 22 item 2): one keyword of ``configure``,
``python -m timer_core.with_worker_server`` for a script left as it is, or torch's own
``worker_main()`` with ``TORCH_WORKER_SERVER_SOCKET``. Each is a real worker process
whose stack the service's client (``capture_worker_server``) takes over the socket it
finds among the worker's own; the keyword's socket is 0600 in a 0700 directory of its
own, which a second user cannot connect to, and is gone when the worker exits."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.second_user import SERVICE_AS_ROOT, SYSTEM_PYTHON, SecondUser
from tests.timer_core.diagnosis.torch_worker_server import needs_torch
from tests.waiting import wait_until
from timer_core.diagnosis.proc_sockets import socket_inodes, unix_listeners
from timer_core.diagnosis.worker_server_capture import WorkerServerCapture, capture_worker_server
from timer_core.own_worker_server import _process_tag

REPO = Path(__file__).resolve().parents[2]
# Generous: the answer takes milliseconds, but the machine is shared (not a timing test).
BUDGET = 10.0

KEYWORD_WORKER = """
import json, sys
import timer_core as timer
client = timer.FileTimerClient(sys.argv[1])
timer.configure(client, worker_server=True)
timer.configure(client, worker_server=True)  # once per process: the same server
from timer_core.own_worker_server import start_worker_server
print(json.dumps({"socket": str(start_worker_server())}), flush=True)

def stuck_in_a_step():
    sys.stdin.readline()

stuck_in_a_step()
"""

FORKING_WORKER = """
import json, os, signal, sys, threading
import timer_core as timer
from timer_core.own_worker_server import start_worker_server
client = timer.FileTimerClient(sys.argv[1])
timer.configure(client, worker_server=True)

def stuck_in_a_step():
    sys.stdin.readline()

def report_exit(child):
    _, status = os.waitpid(child, 0)
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status)}), flush=True)

parent_socket = str(start_worker_server())
child = os.fork()
if child == 0:
    # A normal exit on SIGUSR1: the child's atexit handlers run, the parent's included.
    signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))
    timer.configure(client, worker_server=True)
    mine = str(start_worker_server())
    print(json.dumps({"pid": os.getpid(), "socket": mine, "parent": parent_socket}), flush=True)
else:
    threading.Thread(target=report_exit, args=(child,), daemon=True).start()
stuck_in_a_step()
"""

WORKER_MAIN = """
import sys
from torch.distributed.elastic.control_plane import worker_main

def stuck_in_a_step():
    sys.stdin.readline()

@worker_main()
def main():
    print("{}", flush=True)
    stuck_in_a_step()

main()
"""

SCRIPT = """
import json, sys

def stuck_in_a_step():
    sys.stdin.readline()

print(json.dumps({"argv": sys.argv, "name": __name__}), flush=True)
stuck_in_a_step()
"""

CONNECT = """
import socket, sys
connection = socket.socket(socket.AF_UNIX)
try:
    connection.connect(sys.argv[1])
    print("connected")
except OSError as error:
    print(error.errno)
"""


@contextmanager
def worker(
    argv: list[str], env: dict[str, str] | None = None, *, lines: list[Any] | None = None
) -> Iterator[tuple[int, Any]]:
    """A worker process (stdin open: it runs until it is closed), its pid and the JSON
    line it printed when ready; the lines it prints after that are added to ``lines``."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert process.stdin is not None and process.stdout is not None
    reader: threading.Thread | None = None
    try:
        line = process.stdout.readline()
        assert line, f"worker {argv} exited before it was ready"
        if lines is not None:
            stdout = process.stdout
            reader = threading.Thread(target=lambda: lines.extend(map(json.loads, stdout)))
            reader.start()  # ends at the worker's exit (end of file)
        yield process.pid, json.loads(line)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if reader is not None:
                reader.join(30)
            process.stdout.close()


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def captured(pid: int) -> WorkerServerCapture:
    capture = capture_worker_server(pid, BUDGET)
    assert isinstance(capture, WorkerServerCapture), capture
    assert "stuck_in_a_step" in capture.traceback
    return capture


@needs_torch
def test_the_keyword_serves_the_worker_on_a_private_socket(tmp_path: Path) -> None:
    with worker(python(KEYWORD_WORKER, str(tmp_path / "timers.fifo"))) as (pid, ready):
        path = Path(ready["socket"])
        directory = path.parent
        socket_mode, directory_mode = os.stat(path).st_mode, os.stat(directory).st_mode
        assert stat.S_ISSOCK(socket_mode) and stat.S_IMODE(socket_mode) == 0o600
        assert stat.S_IMODE(directory_mode) == 0o700
        assert os.stat(directory).st_uid == os.geteuid()
        assert os.listdir(directory) == [path.name]
        # Configured twice, started once: the worker listens on one Unix socket.
        listeners = unix_listeners(pid, socket_inodes(pid, time.monotonic() + BUDGET))
        assert [listener.name for listener in listeners] == [os.fsencode(path)]

        capture = captured(pid)
        assert capture.endpoint.address == os.fsencode(path)
    # A normal exit removes the socket and its directory.
    assert not directory.exists()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: a Unix socket's path holds 107 bytes,
    and pytest's own directories are named after the test."""
    directory = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@needs_torch
def test_a_worker_that_exits_at_once_exits(short_tmp: Path) -> None:
    """Torch's server, shut down before its thread serves, never stops: a start returns
    only once it answers, so a worker that exits right after does exit (it hung in 5 of
    8 runs before), and takes its directory with it."""
    start_then_exit = python(
        """
        from timer_core.own_worker_server import start_worker_server
        start_worker_server()
        """
    )
    env = {**os.environ, "TMPDIR": str(short_tmp), "XDG_RUNTIME_DIR": ""}
    for _ in range(3):
        finished = subprocess.run(start_then_exit, env=env, cwd=REPO, timeout=60)
        assert finished.returncode == 0
    assert not list(short_tmp.glob("timer-ws-*"))


@needs_torch
def test_a_start_removes_the_directories_of_killed_workers_only(short_tmp: Path) -> None:
    """A SIGKILLed worker cannot remove its socket's directory; the next start of this
    user's removes it, and leaves a live process's, a reused pid's owner's look-alike
    of another name, and anything not a directory alone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    own_tag = _process_tag(os.getpid())
    assert own_tag is not None
    reused = f"{os.getpid()}.1"  # this pid, another start time: that process is gone
    names = {
        "dead": f"timer-ws-{gone.pid}.42-0123456789abcdef",
        "reused": f"timer-ws-{reused}-0123456789abcdef",
        "live": f"timer-ws-{own_tag}-0123456789abcdef",
        "unrelated": "timer-ws-notes",
    }
    for name in names.values():
        (short_tmp / name).mkdir(mode=0o700)
    (short_tmp / names["dead"] / "worker.sock").touch()
    (short_tmp / "timer-ws-1.1-x").write_text("a file, not a directory")
    env = {"TMPDIR": str(short_tmp), "XDG_RUNTIME_DIR": ""}
    with worker(python(KEYWORD_WORKER, str(short_tmp / "timers.fifo")), env) as (_, ready):
        assert Path(ready["socket"]).parent.parent == short_tmp
        assert Path(ready["socket"]).parent.name.startswith("timer-ws-")
    left = {path.name for path in short_tmp.iterdir()}
    assert names["dead"] not in left and names["reused"] not in left
    assert {names["live"], names["unrelated"], "timer-ws-1.1-x"} <= left


@needs_torch
def test_a_forked_child_gets_a_server_of_its_own(tmp_path: Path) -> None:
    """The child holds its parent's listening socket too, but is served on its own, and
    its exit leaves the parent's server in place."""
    later: list[Any] = []
    argv = python(FORKING_WORKER, str(tmp_path / "timers.fifo"))
    with worker(argv, lines=later) as (parent, child):
        assert child["socket"] != child["parent"]
        capture = captured(child["pid"])
        assert capture.endpoint.address == os.fsencode(child["socket"])
        os.kill(child["pid"], signal.SIGUSR1)
        # A clean exit: the server object it inherited is not destroyed in it (torch's
        # destructor would join a thread the child does not have, and abort).
        assert wait_until(lambda: later == [{"child_exit": 0}], 30), later
        assert not Path(child["socket"]).parent.exists()
        assert Path(child["parent"]).exists()
        assert captured(parent).endpoint.address == os.fsencode(child["parent"])


@pytest.mark.parametrize("how", ["configure", "runner"])
def test_without_torch_the_worker_is_told_what_to_do(tmp_path: Path, how: str) -> None:
    """torch made unimportable: ``configure`` raises before it sets the client, and the
    runner exits with the same advice, running nothing."""
    hide_torch = "import sys; sys.modules['torch'] = None\n"
    if how == "configure":
        code = hide_torch + textwrap.dedent("""
            import timer_core as timer
            from timer_core import api
            from timer_core.own_worker_server import WorkerServerUnavailable
            try:
                timer.configure(timer.FileTimerClient("x"), worker_server=True)
            except WorkerServerUnavailable as error:
                print(error)
            print(api._timer_client is None)
        """)
    else:
        marker = tmp_path / "ran"
        script = tmp_path / "train.py"
        script.write_text(f"open({str(marker)!r}, 'w').close()\n")
        code = hide_torch + f"import sys; sys.argv = ['x', {str(script)!r}]\n"
        code += "from timer_core.with_worker_server import main; main()"
    result = subprocess.run(python(code), cwd=REPO, capture_output=True, text=True, timeout=60)
    said = result.stdout if how == "configure" else result.stderr
    assert "torch" in said and "pip install" in said and "py-spy" in said, said
    if how == "configure":
        assert result.stdout.splitlines()[-1] == "True", result.stdout  # no client set
    else:
        assert result.returncode == 1 and not marker.exists()


@needs_torch
def test_the_runner_serves_a_script_left_as_it_is(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    argv = [sys.executable, "-m", "timer_core.with_worker_server", str(script), "--lr", "0.1"]
    with worker(argv) as (pid, ready):
        assert ready == {"argv": [str(script), "--lr", "0.1"], "name": "__main__"}
        capture = captured(pid)
        assert str(script) in capture.traceback


@needs_torch
def test_torch_worker_main_with_the_environment_variable(tmp_path: Path) -> None:
    """torch's own route, unmodified: ``worker_main()`` reads TORCH_WORKER_SERVER_SOCKET."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    path = private / "worker.sock"
    env = {"TORCH_WORKER_SERVER_SOCKET": str(path)}
    with worker(python(WORKER_MAIN), env) as (pid, _):
        capture = captured(pid)
        assert capture.endpoint.address == os.fsencode(path)


@needs_torch
@SERVICE_AS_ROOT[0]
@SERVICE_AS_ROOT[1]
@SERVICE_AS_ROOT[2]
def test_a_second_user_cannot_connect(second_user: SecondUser, tmp_path: Path) -> None:
    with worker(python(KEYWORD_WORKER, str(tmp_path / "timers.fifo"))) as (pid, ready):
        probe = [SYSTEM_PYTHON, "-c", CONNECT, ready["socket"]]
        # The probe itself works: the worker's own user connects.
        own = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert own.stdout.strip() == "connected", own
        other = second_user.run(probe)
        assert other.stdout.strip() == str(errno.EACCES), other
        captured(pid)  # and the worker still answers
