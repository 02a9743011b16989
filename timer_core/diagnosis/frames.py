"""The frames of a captured stack, from the text py-spy or faulthandler printed.

Only the main thread counts: that is where a training step, and its collectives, run.
A Python frame is a function in a ``.py`` file; a native frame is anything else that
py-spy ``--native`` shows (``c10d::Work::wait``, ``time_sleep``). Line numbers and
addresses are kept for the summary but never used to compare stacks: two ranks stuck
in the same place on different lines of a loop are in the same place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Frame", "StackFrames", "parse_stack"]

# py-spy: "    all_reduce (torch/distributed/distributed_c10d.py:3252)" or, native,
# "    c10d::Work::wait (libtorch_cpu.so)" and "    0x7f30b7ca3f16 (libc.so.6)".
_PY_SPY_FRAME = re.compile(r"^\s{2,}(?P<function>.+?) \((?P<where>[^()]*)\)\s*$")
_PY_SPY_THREAD = re.compile(
    r'^Thread (?P<tid>\d+|0x[0-9a-f]+) \((?P<state>[^)]*)\)(?::\s*"(?P<name>[^"]*)")?'
)
# faulthandler: '  File "/x/train.py", line 10 in step', under "Current thread 0x...".
_FAULTHANDLER_FRAME = re.compile(
    r'^\s+File "(?P<file>[^"]*)", line (?P<line>\d+) in (?P<function>.+)$'
)
_FAULTHANDLER_THREAD = re.compile(r"^(?P<current>Current thread|Thread) 0x[0-9a-f]+ ")
_ADDRESS = re.compile(r"^0x[0-9a-f]+$")


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str  # a path for Python frames, a library for native ones
    line: int | None
    native: bool

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the place: function and file name, no line, no directory."""
        return self.function, self.file.rsplit("/", 1)[-1]

    def where(self) -> str:
        name = self.file.rsplit("/", 1)[-1]
        return f"{name}:{self.line}" if self.line is not None else name


@dataclass(frozen=True, slots=True)
class StackFrames:
    """The main thread's frames, innermost first."""

    frames: tuple[Frame, ...]

    @property
    def python(self) -> tuple[Frame, ...]:
        return tuple(frame for frame in self.frames if not frame.native)

    def signature(self) -> tuple[tuple[str, str], ...]:
        return tuple(frame.key for frame in self.python)


def parse_stack(text: str) -> StackFrames:
    """The main thread's frames of a py-spy or faulthandler dump (none if neither)."""
    if _FAULTHANDLER_THREAD.search(text.lstrip()) or 'File "' in text:
        return StackFrames(_faulthandler_main(text))
    return StackFrames(_py_spy_main(text))


def _py_spy_main(text: str) -> tuple[Frame, ...]:
    threads: list[tuple[bool, list[Frame]]] = []
    for line in text.splitlines():
        thread = _PY_SPY_THREAD.match(line)
        if thread is not None:
            threads.append((thread.group("name") == "MainThread", []))
            continue
        frame = _PY_SPY_FRAME.match(line)
        if frame is None or not threads:
            continue
        function, where = frame.group("function"), frame.group("where")
        if _ADDRESS.match(function):
            continue
        path, _, line_number = where.rpartition(":")
        if path.endswith(".py") and line_number.isdigit():
            threads[-1][1].append(Frame(function, path, int(line_number), native=False))
        else:
            threads[-1][1].append(Frame(function, where, None, native=True))
    return _main_thread(threads)


def _faulthandler_main(text: str) -> tuple[Frame, ...]:
    threads: list[tuple[bool, list[Frame]]] = []
    for line in text.splitlines():
        thread = _FAULTHANDLER_THREAD.match(line)
        if thread is not None:
            # faulthandler marks the thread that dumped, which for a signal-driven dump
            # is the main thread (Python runs signal handlers there).
            threads.append((thread.group("current") == "Current thread", []))
            continue
        frame = _FAULTHANDLER_FRAME.match(line)
        if frame is not None and threads:
            threads[-1][1].append(
                Frame(frame.group("function"), frame.group("file"), int(frame.group("line")), False)
            )
    return _main_thread(threads)


def _main_thread(threads: list[tuple[bool, list[Frame]]]) -> tuple[Frame, ...]:
    for is_main, frames in threads:
        if is_main:
            return tuple(frames)
    return tuple(threads[0][1]) if threads else ()
