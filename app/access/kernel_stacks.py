"""Who may see a worker's kernel stack (issue 20).

A ``/proc`` report (stack method ``proc``) carries ``/proc/PID/stack``, which the kernel
shows to root alone: kernel addresses, and what the kernel is doing for the process.
The service reads it as root, so it shows it only to root and to its own uid, never
to the worker's owner (who may read the rest of the report), nor on the admin token
alone: the token stands for the service's callers, not for the kernel's root. Every
route that serves a stack's text answers through here, and says when it hid it
(``X-Stack-Kernel: hidden``).
"""

from __future__ import annotations

import os

from app.access.callers import Caller
from timer_core.diagnosis import hide_kernel_stack

__all__ = ["HIDDEN_BECAUSE", "stack_for"]

HIDDEN_BECAUSE = (
    "kernel stack hidden: the kernel shows it to root alone, and the service only to "
    "root and its own user"
)


def stack_for(caller: Caller, method: str | None, text: str) -> tuple[str, dict[str, str]]:
    """``text`` (a stack taken by ``method``) as ``caller`` may see it, and the header
    that says whether its kernel stack was hidden."""
    if method != "proc":
        return text, {}
    if caller.uid is not None and caller.uid in (0, os.geteuid()):
        return text, {"X-Stack-Kernel": "shown"}
    return hide_kernel_stack(text, HIDDEN_BECAUSE), {"X-Stack-Kernel": "hidden"}
