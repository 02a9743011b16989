"""The frames of a captured stack, from the text py-spy or faulthandler printed.

Only the main thread counts: that is where a training step, and its collectives, run.
A Python frame is a function in a ``.py`` file; a native frame is anything else that
py-spy ``--native`` shows (``c10d::Work::wait``, ``time_sleep``). Line numbers and
addresses are kept for the summary but never used to compare stacks: two ranks stuck
in the same place on different lines of a loop are in the same place.

A place is named for the operator by the innermost frame of the user's own code: a
rank waits in ``Condition.wait`` (threading.py) because ``wait_for_peers`` (worker.py)
called it, and only the second says where to look. Where the standard library and
site-packages are is the worker's business (its own prefix, venv, container), so a
library frame is told by its path alone, never by the service's own ``sysconfig``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Frame", "StackFrames", "is_library_file", "parse_stack"]

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
# Where installed code lives on any prefix: CPython's stdlib (lib/python3.11/, also
# free-threaded python3.13t/ and lib64/), site-packages and Debian's dist-packages
# (both under or beside it), and torch wherever it was put (a source checkout too).
_LIBRARY_PATH = re.compile(
    r"(^|/)(lib(64)?/python\d+(\.\d+)?t?|site-packages|dist-packages|torch)/"
)
# py-spy (without --full-filenames) prints a file relative to its top package:
# "threading.py", "concurrent/futures/_base.py", "torch/distributed/...". A relative
# path whose first part is a standard module is the standard library's.
_STDLIB_MODULES = frozenset(sys.stdlib_module_names)


def is_library_file(path: str) -> bool:
    """Whether a Python frame's file is the standard library's, an installed package's
    or torch's, rather than the user's own: ``<frozen runpy>`` and ``<string>`` (code
    without a file of its own) count as library too."""
    if path.startswith("<") or _LIBRARY_PATH.search(path):
        return True
    if path.startswith("/"):
        return False
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") in _STDLIB_MODULES


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str  # a path for Python frames, a library for native ones
    line: int | None
    native: bool

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the place: function and file name, no line, no directory.
        The function's own name, without its qualifying prefix: py-spy prints the
        qualified name (``_exception_logger.<locals>.wrapper``) and faulthandler, as
        torch's worker server answers, the bare one (``wrapper``), and ranks waiting in
        one place must group alike whichever way their stacks were taken."""
        return self.function.rsplit(".", 1)[-1], self.file.rsplit("/", 1)[-1]

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

    def innermost_user_frame(self) -> Frame | None:
        """The innermost Python frame in the user's own code; the innermost Python
        frame when every one is a library's (a stack of torch or runpy alone); None
        without Python frames."""
        python = self.python
        mine = next((frame for frame in python if not is_library_file(frame.file)), None)
        return mine or (python[0] if python else None)


def parse_stack(text: str) -> StackFrames:
    """The main thread's frames of a py-spy or faulthandler dump (none if neither)."""
    if _FAULTHANDLER_THREAD.search(text.lstrip()) or 'File "' in text:
        # faulthandler marks the thread that dumped, which for a signal-driven dump is
        # the main thread (Python runs signal handlers there).
        # Torch's worker server answers ``dump_traceback`` from a thread of its own,
        # which has no Python frame: then the main thread is the last one listed
        # (CPython lists the newest thread first, and the main thread is the oldest).
        return StackFrames(
            _main_thread(
                text,
                _FAULTHANDLER_THREAD,
                lambda thread: thread.group("current") == "Current thread",
                _faulthandler_frame,
                otherwise_last=True,
            )
        )
    return StackFrames(
        _main_thread(
            text, _PY_SPY_THREAD, lambda thread: thread.group("name") == "MainThread", _py_spy_frame
        )
    )


def _main_thread(
    text: str,
    thread_header: re.Pattern[str],
    is_main: Callable[[re.Match[str]], bool],
    read_frame: Callable[[str], Frame | None],
    *,
    otherwise_last: bool = False,
) -> tuple[Frame, ...]:
    """The frames of the main thread of a dump, else of its first thread. With
    ``otherwise_last``, a main thread with no frame is passed over too, for the last
    thread. Each thread starts with a line that ``thread_header`` matches;
    ``read_frame`` reads a frame line under it (None: not a frame)."""
    threads: list[tuple[bool, list[Frame]]] = []
    for line in text.splitlines():
        thread = thread_header.match(line)
        if thread is not None:
            threads.append((is_main(thread), []))
        elif threads and (frame := read_frame(line)) is not None:
            threads[-1][1].append(frame)
    for main, frames in threads:
        if main and (frames or not otherwise_last):
            return tuple(frames)
    if not threads:
        return ()
    return tuple(threads[-1][1] if otherwise_last else threads[0][1])


def _py_spy_frame(line: str) -> Frame | None:
    frame = _PY_SPY_FRAME.match(line)
    if frame is None:
        return None
    function, where = frame.group("function"), frame.group("where")
    if _ADDRESS.match(function):
        return None
    path, _, line_number = where.rpartition(":")
    if path.endswith(".py") and line_number.isdigit():
        return Frame(function, path, int(line_number), native=False)
    return Frame(function, where, None, native=True)


def _faulthandler_frame(line: str) -> Frame | None:
    frame = _FAULTHANDLER_FRAME.match(line)
    if frame is None:
        return None
    return Frame(frame.group("function"), frame.group("file"), int(frame.group("line")), False)
