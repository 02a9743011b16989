"""What ``/proc`` said of a rank whose stack could not be taken.

py-spy cannot read a process that is stopped (``T``: it stopped itself, or a debugger
holds it), stuck in the kernel (``D``: a driver, NFS, a GPU call), or that it has no
ptrace rights over; then the capture falls back to a report of what the kernel shows
(``stack_capture``). That report is evidence in its own right: a rank stopped inside
its step is the one its peers wait for. This reads the report back into the few facts
an operator acts on: the state letter, its name and the kernel wait channel.

Only the report's head is read: the process's status and wchan, which the kernel
writes (it escapes the process name there). The threads' lines that follow carry each
thread's ``comm``, which the worker sets to anything, newlines included, so they are
read only for the main thread's wait channel when the head has none (older reports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ProcState", "read_proc_report"]

_STATUS_HEADER = re.compile(r"^/proc/(?P<pid>\d+)/status:$", re.MULTILINE)
_STATE = re.compile(r"^State:\s+(?P<letter>[A-Za-z])\s+\((?P<name>[a-z ]{1,20})\)\s*$")
_WCHAN = re.compile(r"^/proc/\d+/wchan: (?P<wchan>\S{1,64})$")
_THREADS_HEADER = "threads (tid, name, state, "
# "  4242 python S (sleeping) hrtimer_nanosleep": the wait channel is the last word.
_THREAD = re.compile(r"^  (?P<tid>\d+) .* [A-Za-z] \([a-z ]{1,20}\) (?P<wchan>\S{1,64})$")
# States in which a process runs none of its own code until someone else acts: it is
# not waiting for its peers, its peers are waiting for it.
_FROZEN = frozenset("TtD")


@dataclass(frozen=True, slots=True)
class ProcState:
    letter: str  # "T", "D", "S", ...
    name: str  # the kernel's word for it: "stopped", "disk sleep", "sleeping"
    wchan: str | None  # the kernel function it waits in; None when running or unknown

    @property
    def frozen(self) -> bool:
        """Stopped, traced or in uninterruptible sleep: it cannot be what others wait on
        *and* be waiting on them in turn."""
        return self.letter in _FROZEN

    def describe(self) -> str:
        """``stopped (T, wchan do_signal_stop)``."""
        wchan = f", wchan {self.wchan}" if self.wchan else ""
        return f"{self.name} ({self.letter}{wchan})"


def read_proc_report(text: str) -> ProcState | None:
    """The process's state in a ``/proc`` report (``stack_capture``'s last resort);
    None for any other text (a py-spy or faulthandler stack)."""
    header = _STATUS_HEADER.search(text)
    if header is None:
        return None
    pid = header.group("pid")
    head, _, threads = text[header.end() :].partition(_THREADS_HEADER)
    letter = name = wchan = None
    for line in head.splitlines():
        if letter is None and (state := _STATE.match(line)):
            letter, name = state.group("letter"), state.group("name")
        elif wchan is None and (channel := _WCHAN.match(line)):
            wchan = channel.group("wchan")
    if letter is None or name is None:
        return None
    if wchan is None:
        for line in threads.splitlines():
            thread = _THREAD.match(line)
            if thread is not None and thread.group("tid") == pid:
                wchan = thread.group("wchan")
                break
    # The kernel writes "0" (or nothing) for a process that is running, not waiting.
    return ProcState(letter, name, wchan if wchan not in (None, "0", "") else None)
