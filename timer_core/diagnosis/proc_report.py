"""What the kernel shows of a process, for a stack capture that could take no stack:
status, wait channels, the kernel stack (root only), read bounded and without following
a link (``engine.kernel_state``).
"""

from __future__ import annotations

import os
import re
import time

from ..engine.kernel_state import read_proc_head

__all__ = ["hide_kernel_stack", "proc_report"]

# More than any of the kernel's files read here holds (status is ~1.5 KiB).
_PROC_FILE_BYTES = 64 * 1024


def _read(path: str) -> str:
    """A /proc file, bounded (``read_proc_head``), or why it could not be read."""
    try:
        return read_proc_head(path, _PROC_FILE_BYTES).decode(errors="replace").strip()
    except OSError as error:
        return f"(unreadable: {error.strerror})"


_KERNEL_STACK_HEADER = "(kernel stack; needs root):"
# The kernel stack's section of a /proc report: its header line, up to the blank line
# that ends it (or the end, if the report was truncated inside it).
_KERNEL_STACK_SECTION = re.compile(
    r"^(/proc/\d+/stack " + re.escape(_KERNEL_STACK_HEADER) + r"\n)(?:.+\n?)*", re.MULTILINE
)


def hide_kernel_stack(text: str, why: str) -> str:
    """A /proc report (``method == "proc"``) with its kernel stack replaced by ``why``.
    The kernel shows ``/proc/PID/stack`` to root alone (it holds kernel addresses and
    says what other code runs); a root service must not pass it on to whoever owns
    the worker."""
    return _KERNEL_STACK_SECTION.sub(lambda m: f"{m[1]}({why})\n", text)


def proc_report(pid: int, give_up_at: float | None = None) -> str:
    """What the kernel shows of a process: enough to tell a futex wait from an NFS hang.
    Only files the kernel fills in itself (nothing read through the worker's memory,
    such as cmdline or maps, nor its cwd or files), and no more threads are read once
    ``give_up_at`` (monotonic) has passed: a worker may have thousands. Should a read
    block (``stack`` waits for a lock an exec'ing process holds), only the capture's
    own thread waits."""
    # The process's own wait channel on one line of its own, beside its state: what
    # the incident's analysis reads (``proc_state``) when no stack could be taken.
    lines = [f"/proc/{pid}/status:", _read(f"/proc/{pid}/status"), ""]
    lines += [f"/proc/{pid}/wchan: {_read(f'/proc/{pid}/wchan') or '0'}", ""]
    lines += [f"/proc/{pid}/stack {_KERNEL_STACK_HEADER}", _read(f"/proc/{pid}/stack"), ""]
    lines.append("threads (tid, name, state, kernel wait channel):")
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as error:
        tids = []
        lines.append(f"(unreadable: {error.strerror})")
    for shown, tid in enumerate(tids):
        if give_up_at is not None and time.monotonic() >= give_up_at:
            lines.append(f"  ... {len(tids) - shown} more threads not read: out of budget")
            break
        base = f"/proc/{pid}/task/{tid}"
        state = next(
            (line for line in _read(f"{base}/status").splitlines() if line.startswith("State:")),
            "State: ?",
        )
        lines.append(
            f"  {tid} {_read(f'{base}/comm')} {state[6:].strip()} {_read(f'{base}/wchan')}"
        )
    return "\n".join(lines) + "\n"
