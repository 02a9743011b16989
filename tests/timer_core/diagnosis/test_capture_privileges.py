"""py-spy, started by a root service for another user's worker, runs with that user's
privileges and in that worker's mount namespace (issue 20). A real second user stages
the attack: in a mount namespace of its own (``unshare -rm``) its worker loads a
library from a tmpfs and blocks in it, while in the host's namespace the same path is
its link to a root-only file or to a FIFO. strace, run by the test around the whole
helper chain, shows every open of that path made after the drop to the user's uid and
the entry into its mount namespace: root opens none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount_namespace_worker import (
    LIBRARY,
    HostileWorker,
    plant,
    start_hostile,
)
from tests.second_user import SERVICE_AS_ROOT, SYSTEM_PYTHON, SecondUser
from tests.waiting import wait_until
from tests.workers import needs_py_spy
from timer_core.diagnosis import stack_capture, worker_privileges
from timer_core.diagnosis.bounded_subprocess import Finished, run_bounded
from timer_core.diagnosis.stack_capture import StackCapturer
from timer_core.engine.capturer import CapturedStack
from timer_core.engine.process import ProcessIdentity, identify

pytestmark = [
    *SERVICE_AS_ROOT,
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace"),
]

SECRET = "root:the-password-hash"
_CAP_SYS_PTRACE = f"{1 << 19:016x}"


def identity_of(pid: int) -> ProcessIdentity:
    identity = identify(pid)
    assert identity is not None
    return identity


def capture_with(py_spy: Path, pid: int) -> CapturedStack:
    """``pid``'s stack, taken by the stand-in ``py_spy``."""
    capturer = StackCapturer(budget=10)
    capturer.py_spy = str(py_spy)
    return capturer.capture(identity_of(pid))


@pytest.fixture
def hostile(namespaced_user: SecondUser, shared_tmp: Path) -> Iterator[HostileWorker]:
    worker = start_hostile(namespaced_user, shared_tmp)
    yield worker
    worker.stop()


def traced(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Run every helper of the capture under ``strace -f``, logging to ``log``."""
    syscalls = "trace=open,openat,openat2,setresuid,setns,clone,clone3,fork,vfork"

    def run(
        argv: list[str], timeout: float, env: dict[str, str] | None = None, *, limit: int
    ) -> Finished:
        command = ["strace", "-f", "-qq", "-o", str(log), "-e", syscalls, *argv]
        return run_bounded(command, timeout, env, limit=limit)

    monkeypatch.setattr(stack_capture, "run_bounded", run)


def opens_of(log: Path, path: Path, uid: int) -> list[tuple[str, bool, bool]]:
    """Each open of ``path`` in the strace ``log``: (its line, whether that process had
    switched to ``uid``, whether it had entered another mount namespace). Both are
    inherited by the processes and threads it starts."""
    state: dict[str, tuple[bool, bool]] = {}
    opens = []
    for line in log.read_text().splitlines():
        # strace pads the pid to a width ("2070  open(", "31308 open("): split on the run.
        pid, call = line.split(None, 1)
        dropped, entered = state.get(pid, (False, False))
        if re.match(rf"setresuid\({uid}, {uid}, {uid}\)\s+= 0", call):
            dropped = True
        elif re.match(r"setns\(\d+, CLONE_NEWNS\)\s+= 0", call):
            entered = True
        child = re.search(r"(?:clone3?|fork|vfork)\b.*= (\d+)$", call)
        if child:
            state[child.group(1)] = (dropped, entered)
        state[pid] = (dropped, entered)
        if str(path) in call and re.match(r"(<\.\.\. )?open", call):
            opens.append((line, dropped, entered))
    return opens


@needs_py_spy
@pytest.mark.parametrize("target", ["root-only file", "FIFO"])
def test_a_planted_path_is_opened_only_as_the_worker_in_its_namespace(
    target: str,
    hostile: HostileWorker,
    second_user: SecondUser,
    shared_tmp: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if target == "FIFO":
        aim = hostile.library.parent / "fifo"  # the user's own directory, in the host's view
        second_user.run(["mkfifo", str(aim)], check=True)
    else:
        aim = shared_tmp / "shadow"
        aim.write_text(SECRET + "\n")
        aim.chmod(0o600)
    plant(second_user, hostile, aim)
    log = tmp_path / "strace.log"
    traced(monkeypatch, log)

    captured = StackCapturer(budget=10).capture(identity_of(hostile.pid))

    # The native attempt succeeded, within its share: it read the real library (its
    # symbols name the frames), not the link's target, and no FIFO held it.
    assert captured.method == "py-spy", captured.notes
    assert f"/{LIBRARY})" in captured.text, captured.text
    assert SECRET not in captured.text
    assert captured.notes == ()
    opens = opens_of(log, hostile.library, second_user.uid)
    assert opens, "py-spy never opened the library: the test proves nothing"
    for line, dropped, entered in opens:
        assert dropped and entered, line


def test_a_py_spy_the_worker_mounts_in_its_namespace_is_not_run(
    namespaced_user: SecondUser, shared_tmp: Path
) -> None:
    # The service's stand-in py-spy, and the worker's own at the same path in its
    # namespace: nsenter used to exec that one (issue 20 review), which wrote without
    # end into the root service's memory, and whatever it printed became the stack.
    tools = shared_tmp / "tools"
    tools.mkdir(mode=0o755)
    ours = tools / "py-spy"
    ours.write_text('#!/bin/sh\necho "the service\'s py-spy"\n')
    ours.chmod(0o755)
    script = (
        f"mount -t tmpfs hostile {tools} && "
        f"printf '#!/bin/sh\\nexec cat /dev/zero\\n' > {ours} && chmod 755 {ours} && "
        "echo ready && exec sleep 900"
    )
    worker = namespaced_user.popen(["unshare", "-rm", "sh", "-c", script], stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
        assert wait_until(lambda: Path(f"/proc/{worker.pid}/comm").read_text() == "sleep\n")
        captured = capture_with(ours, worker.pid)
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    assert captured.method == "py-spy", captured.notes
    assert captured.text == "the service's py-spy\n"


def test_py_spy_gets_the_workers_uid_ptrace_alone_and_no_environment(
    second_user: SecondUser, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for py-spy that reports what it runs with.
    reporter = shared_tmp / "py-spy"
    reporter.write_text(
        "#!/bin/sh\n"
        "grep -E '^(Uid|Gid|Groups|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status\n"
        "env\n"
    )
    reporter.chmod(0o755)
    monkeypatch.setenv("TIMER_SERVICE_TOKEN", "service-secret-token")
    worker = second_user.sleeper()
    try:
        # setpriv switches to the user a moment after it starts.
        assert wait_until(lambda: identity_of(worker.pid).uid == second_user.uid)
        captured = capture_with(reporter, worker.pid)
    finally:
        worker.kill()
        worker.wait()
    assert captured.method == "py-spy", captured.notes
    report = dict(line.split(":", 1) for line in captured.text.splitlines() if ":" in line)
    uid, gid = str(second_user.uid), str(second_user.gid)
    assert report["Uid"].split() == [uid] * 4 and report["Gid"].split() == [gid] * 4
    assert report["Groups"].strip() == ""
    for caps in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert report[caps].strip() == _CAP_SYS_PTRACE, (caps, report[caps])
    assert report["NoNewPrivs"].strip() == "1"
    assert "service-secret-token" not in captured.text
    assert os.environ["TIMER_SERVICE_TOKEN"] == "service-secret-token"


@needs_py_spy
def test_a_fifo_in_the_workers_own_namespace_holds_each_attempt_to_its_share(
    namespaced_user: SecondUser, shared_tmp: Path
) -> None:
    # Named as libpython, so even the Python-only attempt opens it: both block.
    worker = start_hostile(namespaced_user, shared_tmp, name="libpython3.11.so", fifo_inside=True)
    budget = 1.0
    try:
        captured = StackCapturer(budget=budget).capture(identity_of(worker.pid))
        alive = worker.process.poll() is None
    finally:
        worker.stop()
    assert captured.method == "proc"
    native, python_only = captured.notes
    # Each attempt was cut off at its share of the budget, and the /proc report came
    # after them: the kill waited on nothing unbounded.
    cut_off = re.fullmatch(r"py-spy: timed out after ([\d.]+)s", native)
    assert cut_off is not None, native
    assert float(cut_off[1]) <= budget / 2 + 0.01
    assert python_only.startswith("py-spy (python only): timed out after")
    assert captured.seconds <= budget + 1.0  # a generous margin: a safety bound only
    assert alive


def test_without_setpriv_py_spy_is_not_run_for_another_user(
    second_user: SecondUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_privileges, "_tool", lambda name: None)
    worker = second_user.sleeper()
    try:
        assert wait_until(lambda: identity_of(worker.pid).uid == second_user.uid)
        captured = StackCapturer(budget=10).capture(identity_of(worker.pid))
    finally:
        worker.kill()
        worker.wait()
    assert captured.method == "proc"
    # One note: the Python-only attempt would not have run either.
    assert captured.notes == (
        "py-spy: not run: setpriv (util-linux) is missing, and root must not run it",
    )


@needs_py_spy
def test_a_mount_namespace_made_by_root_is_not_entered_and_the_notes_say_so(
    second_user: SecondUser,
) -> None:
    # root makes the namespace, then becomes the user: only root could enter it.
    python = second_user.argv([SYSTEM_PYTHON, "-c", "import time\nwhile True: time.sleep(1)"])
    worker = subprocess.Popen(["unshare", "-m", *python])
    try:
        assert wait_until(lambda: identity_of(worker.pid).uid == second_user.uid)
        assert wait_until(lambda: "python" in Path(f"/proc/{worker.pid}/comm").read_text())
        captured = StackCapturer(budget=10).capture(identity_of(worker.pid))
    finally:
        worker.kill()
        worker.wait()
    assert captured.method == "py-spy", captured.notes
    assert captured.notes == (
        "py-spy: ran in the service's mount namespace: the worker's belongs to the host's "
        "user namespace, which only root may enter",
    )


@pytest.mark.parametrize(
    "owner", ["nobody", "root"], ids=["another user's namespace", "root's namespace"]
)
def test_a_reused_pid_in_a_namespace_not_the_workers_is_not_entered(
    owner: str, namespaced_user: SecondUser, shared_tmp: Path
) -> None:
    """The worker's namespaces are entered by ``/proc/PID/ns`` of its pid, after its
    credentials were read: should the pid name another process by then (the worker
    exited, the pid was reused), nsenter still runs as the worker's user, which may
    enter only namespaces its own user made. The helper does not run."""
    marker = shared_tmp / "ran"
    helper = shared_tmp / "helper"
    helper.write_text(f"#!/bin/sh\ntouch {marker}\n")
    helper.chmod(0o755)
    unshare = ["unshare", "-Urm", "sleep", "60"]
    if owner == "nobody":
        unshare = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *unshare]
    other = subprocess.Popen(unshare)
    try:
        assert wait_until(lambda: Path(f"/proc/{other.pid}/comm").read_text() == "sleep\n")
        taken = worker_privileges.credentials_of(other.pid)
        assert taken is not None and taken.user_ns is not None
        # The worker's credentials, as read before its pid was reused.
        worker = worker_privileges.WorkerCredentials(
            namespaced_user.uid, namespaced_user.gid, taken.user_ns, taken.mount_ns
        )
        command = worker_privileges.as_worker([str(helper)], other.pid, worker)
        assert command.argv is not None and "--wd=" + str(shared_tmp) in command.argv
        result = run_bounded(command.argv, timeout=30, env=command.env)
    finally:
        other.kill()
        other.wait()
    assert result.returncode != 0
    assert "reassociate to namespace 'ns/user' failed: Operation not permitted" in result.stderr
    assert not marker.exists()
