"""Run a capture helper (py-spy) with no more privilege than it needs: as the worker's
own user, never as root.

py-spy opens files by the paths in the worker's ``/proc/PID/maps`` (to read the
symbols of every library it unwinds through). Those paths are the worker's: in a mount
namespace of its own (``unshare -rm``) a user mounts a tmpfs over a directory, loads a
library from it, and leaves, in the service's namespace, a link of the same name to
``/etc/shadow`` or to a FIFO. Root's py-spy then opened the secret, or blocked on the
FIFO for the whole budget. So, when the service is root and the worker is not:

- py-spy runs as the worker's real uid and gid, with no supplementary groups,
  ``no_new_privs``, and only ``CAP_SYS_PTRACE``: in its bounding set, and as an
  ambient capability so that it survives the exec (for Yama's ``ptrace_scope`` 1 and 2
  and for workers that made themselves non-dumpable). The worker's user cannot
  ptrace it nor read its ``/proc`` files (the kernel wants the tracer's capabilities to
  cover the tracee's), and it gets an empty environment (no token of the service's).
- When the worker lives in another mount namespace that belongs to a user namespace of
  its own, py-spy enters both (``nsenter``, run as the worker's user: the owner of a
  user namespace may enter it), so every path means what it means to the worker. In
  there it holds the capabilities of that namespace only, which are the worker's
  user's own, and not even ``CAP_SYS_PTRACE`` over the host.
- A mount namespace of the host's user namespace (made by root, e.g. a container) is
  not entered: only root could, and then root would exec whatever that namespace
  calls setpriv or py-spy. py-spy runs in the service's namespace, as the worker's
  user, and the capture's notes say so.

Both tools are util-linux's (``setpriv``, ``nsenter``), run by absolute path, looked up
in the service's own namespace, and so is py-spy itself: nsenter runs it from a
directory it opened before entering (``--wd``), never by a path the worker's mounts
decide. Without them py-spy is not run for other users at all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ..engine.process import status_numbers

__all__ = ["NOT_RUN", "HelperCommand", "WorkerCredentials", "as_worker", "credentials_of"]

# How the note of a helper that must not run at all begins.
NOT_RUN = "not run: "

# Where util-linux installs them on Debian and most distributions; PATH as a fallback.
_TOOL_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")


@dataclass(frozen=True, slots=True)
class WorkerCredentials:
    """Who a worker is, read from its ``/proc`` entry as one snapshot."""

    uid: int
    gid: int
    user_ns: tuple[int, int] | None  # (st_dev, st_ino) of its user namespace
    mount_ns: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class HelperCommand:
    """A helper's command line and environment, or why it must not run."""

    argv: list[str] | None
    env: dict[str, str] | None  # None: the service's own (the helper runs as the service)
    note: str = ""  # what the capture should say it did differently ("" for nothing)


def _namespace(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def credentials_of(pid: int) -> WorkerCredentials | None:
    """The worker's real uid and gid and its namespaces, or None if it is gone."""
    ids = status_numbers(pid, b"Uid", b"Gid")
    if ids is None:
        return None
    return WorkerCredentials(
        ids[0], ids[1], _namespace(f"/proc/{pid}/ns/user"), _namespace(f"/proc/{pid}/ns/mnt")
    )


def _tool(name: str) -> str | None:
    for directory in _TOOL_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def as_worker(argv: list[str], pid: int, worker: WorkerCredentials) -> HelperCommand:
    """``argv`` (a helper acting on ``pid``) to run with the worker's privileges."""
    if os.geteuid() != 0 or worker.uid == 0:
        # A service that is not root reads only its own uid's workers, with that uid's
        # rights; root's own workers are root's.
        return HelperCommand(argv, None)
    setpriv = _tool("setpriv")
    if setpriv is None:
        return HelperCommand(
            None, None, NOT_RUN + "setpriv (util-linux) is missing, and root must not run it"
        )
    drop = [
        setpriv,
        f"--reuid={worker.uid}",
        f"--regid={worker.gid}",
        "--clear-groups",
        "--nnp",
        "--inh-caps=-all,+sys_ptrace",
        "--ambient-caps=-all,+sys_ptrace",
        "--bounding-set=-all,+sys_ptrace",
    ]
    own_mount_ns = _namespace("/proc/self/ns/mnt")
    if worker.mount_ns is None or worker.mount_ns == own_mount_ns:
        return HelperCommand([*drop, *argv], {})
    if worker.user_ns is None or worker.user_ns == _namespace("/proc/self/ns/user"):
        return HelperCommand(
            [*drop, *argv],
            {},
            "ran in the service's mount namespace: the worker's belongs to the host's "
            "user namespace, which only root may enter",
        )
    nsenter = _tool("nsenter")
    if nsenter is None:
        return HelperCommand(
            None, None, NOT_RUN + "nsenter (util-linux) is missing to enter the worker's mounts"
        )
    directory, name = os.path.split(os.path.abspath(argv[0]))
    enter = [
        nsenter,
        f"--user=/proc/{pid}/ns/user",
        f"--mount=/proc/{pid}/ns/mnt",
        # No setgroups/setuid(0) in there (a namespace made by ``unshare -r`` denies
        # setgroups): the worker's own ids, as mapped.
        "--preserve-credentials",
        # nsenter execs the helper after entering, where the helper's path is the
        # worker's to mount over: its own "py-spy" would run and its output (any
        # amount, any text) be taken for the stack. The directory is opened here, in
        # the service's namespace, before entering; nsenter changes into it after,
        # and the helper runs by a path relative to it: the service's own file. (A
        # helper with an ELF interpreter or a #! line would still find that in the
        # worker's namespace: pip's py-spy is static.)
        f"--wd={directory}",
        os.path.join(".", name),
    ]
    return HelperCommand([*drop, *enter, *argv[1:]], {})
