"""What the kernel says of a process, from the files it writes itself: its state
(``D``, "disk sleep"; ``T``, "stopped") and the kernel function it waits in.

One bounded reader of ``/proc`` files for the engine and the captures alike. A process
stuck in the kernel may make such a read wait (it takes locks the process holds), so
callers on the kill path read from a thread of their own; the read itself is bounded
in bytes and follows no link at its end.

Only what the kernel writes is parsed (``status``'s State line, ``wchan``), nothing the
worker chose: its name in the same ``status`` file is its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["KernelState", "read_kernel_state", "read_proc_head"]

# More than the head of /proc/PID/status (its State line is the third) or a wchan.
STATUS_HEAD_BYTES = 4096
# Letters of a process that runs none of its own code, its signal handlers included,
# until someone else acts: stopped (SIGSTOP, SIGCONT resumes it) or stopped by a tracer.
_STOPPED = frozenset("Tt")


@dataclass(frozen=True, slots=True)
class KernelState:
    """A process's state letter and its name, and the kernel function it waits in
    (None when running, or unknown)."""

    letter: str | None
    name: str | None
    wchan: str | None

    @property
    def stopped(self) -> bool:
        """Stopped or traced: py-spy cannot suspend it, and its handlers do not run."""
        return self.letter is not None and self.letter in _STOPPED

    def describe(self) -> str:
        """``T (stopped)``."""
        return f"{self.letter} ({self.name})" if self.name else str(self.letter)


def read_proc_head(path: str, limit: int = STATUS_HEAD_BYTES) -> bytes:
    """The first ``limit`` bytes of a /proc file, no link followed at its end.
    ``OSError`` if it cannot be read (gone, refused)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        left = limit
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _head_or_nothing(path: str) -> str:
    try:
        return read_proc_head(path).decode(errors="replace")
    except OSError:
        return ""


def read_kernel_state(pid: int) -> KernelState:
    """``/proc/PID/status``'s State line and ``/proc/PID/wchan``."""
    letter = name = None
    for line in _head_or_nothing(f"/proc/{pid}/status").splitlines():
        if line.startswith("State:"):
            # "State:\tD (disk sleep)"
            words = line[len("State:") :].strip()
            letter, _, rest = words.partition(" ")
            name = rest.strip("()") or None
            break
    wchan = _head_or_nothing(f"/proc/{pid}/wchan").strip()
    # The kernel writes "0" (or nothing) for a process that is running, not waiting.
    return KernelState(letter or None, name, wchan if wchan not in ("", "0") else None)
