"""May the service signal other users' workers, and may its py-spy read them?

Yama's ``/proc/sys/kernel/yama/ptrace_scope`` decides who may attach to a process
(py-spy suspends the worker through ptrace): 0, any process of the same uid; 1, only
its descendants (the service's py-spy is not a worker's ancestor); 2, only holders of
``CAP_SYS_PTRACE``; 3, nobody, until the next boot. The service, as root, runs py-spy as
the worker's own user with ``CAP_SYS_PTRACE`` kept (``worker_privileges``), which
passes 1 and 2, if the service holds that capability itself: a container or a systemd
unit may have taken it away, and ``CAP_KILL`` with it.
"""

from __future__ import annotations

import os

from app.settings import Settings

from .results import Check, Result, Status

__all__ = ["CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_KILL", "CAP_SYS_PTRACE", "CHECKS"]

# Bit numbers, from linux/capability.h.
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_KILL = 5
CAP_SYS_PTRACE = 19

_YAMA = "/proc/sys/kernel/yama/ptrace_scope"
_GRANT_PTRACE = (
    "run the service as root with CAP_SYS_PTRACE (systemd: keep it in "
    "CapabilityBoundingSet=, or AmbientCapabilities=CAP_SYS_PTRACE for a service user; "
    "docker: --cap-add SYS_PTRACE)"
)
_NO_CAPTURE = "nothing to check: stack capture is off (--no-capture-stacks or --hub)"


def effective_capabilities() -> int:
    """This process's CapEff mask, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has(mask: int, capability: int) -> bool:
    return bool(mask >> capability & 1)


def _captures(settings: Settings) -> bool:
    return settings.capture_stacks and not settings.hub


def check_ptrace_scope(settings: Settings) -> list[Result]:
    name = "ptrace scope"
    if not _captures(settings):
        return [Result(name, Status.OK, _NO_CAPTURE)]
    try:
        with open(_YAMA) as scope_file:
            scope = int(scope_file.read().strip())
    except FileNotFoundError:
        found = "Yama is not loaded: ptrace is limited by uid and CAP_SYS_PTRACE only"
        return [Result(name, Status.OK, found)]
    except (OSError, ValueError) as error:
        return [Result(name, Status.WARN, f"cannot read {_YAMA}: {error}", f"check {_YAMA}")]
    ptrace = _has(effective_capabilities(), CAP_SYS_PTRACE)
    if scope == 0:
        return [Result(name, Status.OK, "ptrace_scope 0: py-spy may read any worker of its uid")]
    if scope in (1, 2) and ptrace:
        found = f"ptrace_scope {scope}, and the service holds CAP_SYS_PTRACE: py-spy may attach"
        return [Result(name, Status.OK, found)]
    if scope in (1, 2):
        who = "only its own descendants" if scope == 1 else "only holders of CAP_SYS_PTRACE"
        found = (
            f"ptrace_scope {scope} lets {who} attach, and this process has no "
            "CAP_SYS_PTRACE: py-spy cannot read workers, so captures fall back to torch's "
            "worker server, faulthandler or /proc"
        )
        fix = f"{_GRANT_PTRACE}, or set kernel.yama.ptrace_scope=0 (sysctl -w; /etc/sysctl.d/)"
        return [Result(name, Status.WARN, found, fix)]
    found = f"ptrace_scope {scope}: no process may attach to another, until the next boot"
    fix = (
        "set kernel.yama.ptrace_scope = 1 in /etc/sysctl.d/ and reboot (3 cannot be lowered "
        "while running); until then workers' stacks come only from torch's worker server "
        "(worker_server=True) or faulthandler (dump_stack_on); or pass --no-capture-stacks"
    )
    return [Result(name, Status.FAIL, found, fix)]


def check_capabilities(settings: Settings) -> list[Result]:
    name = "capabilities"
    mask = effective_capabilities()
    if os.geteuid() != 0:
        found = (
            f"runs as uid {os.geteuid()}, not root: it signals and reads only uid "
            f"{os.geteuid()}'s workers (a request for another user's is refused)"
        )
        return [Result(name, Status.OK, found)]
    if settings.hub:
        return [Result(name, Status.OK, "a --hub signals no worker: no capability needed")]
    missing = [] if _has(mask, CAP_KILL) else ["CAP_KILL (signal other users' workers)"]
    if _captures(settings) and not _has(mask, CAP_SYS_PTRACE):
        missing.append("CAP_SYS_PTRACE (py-spy and /proc/PID/fd of other users' workers)")
    if missing:
        found = f"root without {' and '.join(missing)}: CapEff is {mask:016x}"
        fix = (
            "start the service with them: systemd's CapabilityBoundingSet= must list "
            "CAP_KILL CAP_SYS_PTRACE (or be unset); docker: --cap-add KILL --cap-add "
            "SYS_PTRACE; a setpriv/capsh wrapper must not drop them"
        )
        return [Result(name, Status.FAIL, found, fix)]
    if _captures(settings) and not (
        _has(mask, CAP_DAC_READ_SEARCH) or _has(mask, CAP_DAC_OVERRIDE)
    ):
        found = (
            "root without CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE: the stacks workers dump "
            "themselves (dump_stack_on), in their own 0700 directories, cannot be read"
        )
        fix = "keep CAP_DAC_READ_SEARCH in the service's capability bounding set"
        return [Result(name, Status.WARN, found, fix)]
    held = [
        cap
        for cap, bit in (
            ("CAP_KILL", CAP_KILL),
            ("CAP_SYS_PTRACE", CAP_SYS_PTRACE),
            ("CAP_DAC_READ_SEARCH", CAP_DAC_READ_SEARCH),
        )
        if _has(mask, bit)
    ]
    return [Result(name, Status.OK, f"root with {', '.join(held)}")]


CHECKS = [
    Check("ptrace scope", check_ptrace_scope, 2.0, f"read {_YAMA} by hand"),
    Check("capabilities", check_capabilities, 2.0, "read CapEff in /proc/self/status by hand"),
]
