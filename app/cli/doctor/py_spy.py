"""Is py-spy there, the very one the service would run, and can it read a worker?

Found as the service finds it (``py_spy_candidate``: beside the interpreter, then on
PATH), and tried on a real test worker: ``py-spy dump`` of a sleeping Python process
must name the function it sleeps in. As root, a second test worker runs as the user
``nobody``, and py-spy is run on it exactly as the service runs it on another user's
worker (``worker_privileges.as_worker``: as that user, with only CAP_SYS_PTRACE): that
is where a capability taken away or Yama shows. (A py-spy under a private directory,
a venv in /root, still runs: setpriv keeps root's capabilities until its exec.)

Before either runs it, the py-spy found is judged as the service's own files are
(``safe_dirs``): the file, and every directory above it, must belong to root or the
service's uid and be writable by nobody else. A py-spy that another user could
replace (a PATH entry they own, a venv in their home) is a fail, and is not run: the
service would run it as root on root's workers, and with CAP_SYS_PTRACE on others'.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

from app.settings import Settings
from timer_core.diagnosis.bounded_subprocess import run_bounded
from timer_core.diagnosis.stack_capture import py_spy_candidate, py_spy_error
from timer_core.diagnosis.worker_privileges import as_worker, credentials_of
from timer_core.safe_dirs import replaceable_by_others

from .probe_process import PROBE_FUNCTION, ProbeStartError, probe_process, sleeping_python
from .results import Check, Result, Status

__all__ = ["CHECKS"]

# Seconds py-spy has to dump the test worker: a capture's whole default budget is 2 s.
_DUMP_SECONDS = 5.0
_START_SECONDS = 10.0
# A Python every user can run (the service's may live below a private directory).
_SYSTEM_PYTHON = "/usr/bin/python3"
_OTHER_USER = "nobody"
_NOT_FOUND_FIX = (
    "install it in the service's environment (pip install py-spy: it is a dependency of "
    "timer-service, so reinstalling timer-service brings it), or put it on PATH; or pass "
    "--no-capture-stacks"
)


_REPLACEABLE_FIX = (
    "install py-spy where only root can change it (pip install py-spy in a venv under "
    "/opt owned by root, or /usr/local/bin), and keep directories others can write out "
    "of the service's PATH"
)


def _captures(settings: Settings) -> bool:
    return settings.capture_stacks and not settings.hub


def _trusted_py_spy(name: str) -> tuple[str | None, Result | None]:
    """The py-spy the service would run, or the fail that says why it must not run."""
    # Where the service looks, before its own refusal of a replaceable one: this check
    # says which it found and why it would not run it.
    py_spy = py_spy_candidate()
    if py_spy is None:
        found = f"py-spy is neither beside {sys.executable} nor on PATH: no stack comes from it"
        return None, Result(name, Status.FAIL, found, _NOT_FOUND_FIX)
    why = replaceable_by_others(py_spy)
    if why is not None:
        found = (
            f"{py_spy}, which the service would run as root, could be replaced by another "
            f"user: {why}; not run"
        )
        return None, Result(name, Status.FAIL, found, _REPLACEABLE_FIX)
    return py_spy, None


def _dump(py_spy: str, pid: int, worker_uid: int | None) -> tuple[bool, str, float]:
    """(whether py-spy's dump of ``pid`` names the test worker's function, why not, seconds)."""
    argv = [py_spy, "dump", "--pid", str(pid)]
    env: dict[str, str] | None = None
    if worker_uid is not None:
        credentials = credentials_of(pid)
        if credentials is None:
            return False, "the test worker is gone", 0.0
        command = as_worker(argv, pid, credentials)
        if command.argv is None:
            return False, command.note, 0.0
        argv, env = command.argv, command.env
    started = time.monotonic()
    try:
        finished = run_bounded(argv, timeout=_DUMP_SECONDS, env=env)
    except subprocess.TimeoutExpired:
        return False, f"py-spy did not finish within {_DUMP_SECONDS:g} s", _DUMP_SECONDS
    except OSError as error:
        return False, str(error), 0.0
    seconds = time.monotonic() - started
    if finished.returncode != 0:
        return False, py_spy_error(finished.stderr or finished.stdout, finished.returncode), seconds
    if PROBE_FUNCTION not in finished.stdout:
        return False, f"its dump does not show the test worker: {finished.stdout[:200]!r}", seconds
    return True, "", seconds


def _fix_for(why: str, py_spy: str) -> str:
    lowered = why.lower()
    if "permission" in lowered or "operation not permitted" in lowered or "ptrace" in lowered:
        if "denied" in lowered and ("exec" in lowered or "os error 13" in lowered):
            return (
                f"every user must be able to run {py_spy} (the service runs it as the "
                "worker's user): install py-spy where no private directory is above it, "
                "e.g. a venv under /opt or /usr/local/bin"
            )
        return (
            "give the service CAP_SYS_PTRACE (run it as root; systemd "
            "CapabilityBoundingSet= must keep it; docker --cap-add SYS_PTRACE) and check "
            "kernel.yama.ptrace_scope (see the ptrace scope line)"
        )
    if "setpriv" in lowered or "nsenter" in lowered:
        return "install util-linux (setpriv, nsenter): apt install util-linux"
    return f"run '{py_spy} dump --pid PID' on a sleeping python by hand to see why"


def check_py_spy(settings: Settings) -> list[Result]:
    name = "py-spy"
    if not _captures(settings):
        return [Result(name, Status.OK, "not needed: stack capture is off")]
    py_spy, refused = _trusted_py_spy(name)
    if py_spy is None:
        assert refused is not None
        return [refused]
    try:
        with probe_process(sleeping_python(sys.executable), start_within=_START_SECONDS) as pid:
            read, why, seconds = _dump(py_spy, pid, None)
    except ProbeStartError as error:
        found = f"could not start a test worker ({sys.executable}): {error}"
        fix = f"run {sys.executable} -c 'print(1)' by hand to see why"
        return [Result(name, Status.FAIL, found, fix)]
    if not read:
        found = f"{py_spy} could not read a test worker of uid {os.geteuid()}: {why}"
        return [Result(name, Status.FAIL, found, _fix_for(why, py_spy))]
    found = f"{py_spy} read a test worker of uid {os.geteuid()} in {seconds:.2f} s"
    return [Result(name, Status.OK, found)]


def check_py_spy_other_user(settings: Settings) -> list[Result]:
    name = "py-spy, other users"
    if not _captures(settings):
        return [Result(name, Status.OK, "not needed: stack capture is off")]
    if os.geteuid() != 0:
        found = f"not root: the service reads only uid {os.geteuid()}'s workers"
        return [Result(name, Status.OK, found)]
    py_spy, refused = _trusted_py_spy(name)
    if py_spy is None:
        assert refused is not None
        return [refused]
    try:
        user = pwd.getpwnam(_OTHER_USER)
    except KeyError:
        return [Result(name, Status.OK, f"skipped: no user {_OTHER_USER!r} to test with")]
    if not os.path.exists(_SYSTEM_PYTHON):
        return [Result(name, Status.OK, f"skipped: no {_SYSTEM_PYTHON} to run a test worker")]
    try:
        with probe_process(
            sleeping_python(_SYSTEM_PYTHON),
            start_within=_START_SECONDS,
            env={"PATH": "/usr/bin:/bin"},
            user=(user.pw_uid, user.pw_gid),
        ) as pid:
            read, why, seconds = _dump(py_spy, pid, user.pw_uid)
    except ProbeStartError as error:
        found = f"could not start a test worker as {_OTHER_USER}: {error}"
        fix = (
            f"run setpriv --reuid={user.pw_uid} --regid={user.pw_gid} --clear-groups "
            f"{_SYSTEM_PYTHON} -c 'print(1)' by hand to see why"
        )
        return [Result(name, Status.WARN, found, fix)]
    if not read:
        found = (
            f"py-spy, run as the service runs it for another user's worker, could not read "
            f"a test worker of {_OTHER_USER} (uid {user.pw_uid}): {why}"
        )
        return [Result(name, Status.FAIL, found, _fix_for(why, py_spy))]
    found = (
        f"read a test worker of {_OTHER_USER} (uid {user.pw_uid}) as its user, in {seconds:.2f} s"
    )
    return [Result(name, Status.OK, found)]


_LIMIT = _START_SECONDS + _DUMP_SECONDS + 5
_HUNG = "py-spy hung on a sleeping test worker: run 'py-spy dump --pid PID' by hand to see why"
CHECKS = [
    Check("py-spy", check_py_spy, _START_SECONDS + _DUMP_SECONDS + 5, _HUNG),
    Check(
        "py-spy, other users", check_py_spy_other_user, _START_SECONDS + _DUMP_SECONDS + 5, _HUNG
    ),
]
