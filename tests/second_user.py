"""A second, unprivileged user for the tests of who may do what (needs root).

``ensure_user(name)`` creates a system user with no home and no login shell, or reuses
it; ``as_user(uid, gid, argv)`` is the command line that runs ``argv`` as that user,
with no supplementary groups. That user cannot run this project's venv (its interpreter
lives under /root, mode 0700): give it shell commands or Debian's /usr/bin/python3 with
the standard library only.
"""

from __future__ import annotations

import pwd
import subprocess

__all__ = ["as_user", "ensure_user"]


def ensure_user(name: str) -> tuple[int, int]:
    """``(uid, gid)`` of the system user ``name``, created if it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        try:
            # Another test (or worker) may have created it meanwhile: that is fine.
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(f"useradd {name} failed: {made.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def as_user(uid: int, gid: int, argv: list[str]) -> list[str]:
    """``argv`` run as ``uid``/``gid`` through setpriv, without root's groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
