"""Can the service reach torch's worker server in a worker?

A test worker starts torch's ``_WorkerServer`` the way a real one does
(``timer_core.own_worker_server``, what ``worker_server=True`` and
``python -m timer_core.with_worker_server`` start), and the service's own first
capture attempt (``server_stack.stack_from_worker_server``: find the socket among the
worker's, check its peer, ask for the stack) must get its stack. That path needs
/proc/PID/fd of the worker and a torch with its distributed part; a hidepid /proc or
a torch built without it shows here.

The test worker is this Python with this environment: the workers' own environment
may differ (check it there with ``python -m timer_core.with_worker_server``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import timer_core
from app.settings import Settings
from timer_core.diagnosis.server_stack import ServerStack, stack_from_worker_server
from timer_core.engine.process import identify

from .probe_process import ProbeStartError, probe_process, sleeping_python
from .results import Check, Result, Status

__all__ = ["CHECKS"]

NAME = "torch worker server"
# Importing torch takes seconds, more on a cold cache or a loaded host.
_START_SECONDS = 45.0
_ASK_SECONDS = 5.0
_SETUP = "from timer_core.own_worker_server import start_worker_server\nstart_worker_server()"


def _test_worker_env() -> dict[str, str]:
    """This environment, with timer_core importable however it was installed."""
    env = dict(os.environ)
    where = str(Path(timer_core.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    return env


def check_worker_server(settings: Settings) -> list[Result]:
    if not settings.capture_stacks or settings.hub:
        return [Result(NAME, Status.OK, "not needed: stack capture is off")]
    if importlib.util.find_spec("torch") is None:
        found = (
            f"skipped: torch is not installed for {sys.executable}; the service finds the "
            "server in workers that run one, whatever their environment"
        )
        return [Result(NAME, Status.OK, found)]
    argv = sleeping_python(sys.executable, _SETUP)
    try:
        with probe_process(argv, start_within=_START_SECONDS, env=_test_worker_env()) as pid:
            identity = identify(pid)
            if identity is None:
                found = "the test worker exited before it could be asked"
                return [Result(NAME, Status.FAIL, found, "run doctor again")]
            started = time.monotonic()
            answer = stack_from_worker_server(identity, started + _ASK_SECONDS)
            seconds = time.monotonic() - started
    except ProbeStartError as error:
        found = f"a test worker could not start torch's worker server: {error}"
        fix = (
            "install a torch with torch.distributed (pip install 'timer-service[torch]'); "
            "until then captures use py-spy"
        )
        return [Result(NAME, Status.WARN, found, fix)]
    if isinstance(answer, ServerStack):
        found = f"a test worker's server (pid {pid}) gave its stack in {seconds * 1000:.0f} ms"
        return [Result(NAME, Status.OK, found)]
    why = answer or "its socket was not found among the worker's listening sockets"
    found = f"the service's capture could not ask a test worker's server (pid {pid}): {why}"
    fix = (
        "the service must read workers' /proc/PID/fd and connect to their sockets: mount "
        "/proc without hidepid for it, keep CAP_SYS_PTRACE, and run it in the workers' "
        "network namespace"
    )
    return [Result(NAME, Status.FAIL, found, fix)]


CHECKS = [
    Check(
        NAME,
        check_worker_server,
        _START_SECONDS + _ASK_SECONDS + 5,
        "start a worker with python -m timer_core.with_worker_server and look at its log",
    )
]
