"""The library's logger names: an operator contract (docs/logging.md).

Operators filter and route on these names, so they stay what they are wherever the
code that logs moves; every module of ``timer_core`` takes its logger's name from
here, and ``tests/test_logger_names.py`` holds the code and the page to this table.
Standard library only: every layer of the library may import it.
"""

from __future__ import annotations

__all__ = [
    "API",
    "DEBUG_INFO",
    "DESCRIPTORS",
    "DUMP_DIRS",
    "EVENTS",
    "EXIT_WATCHER",
    "EXPIRY",
    "FIFO_DIR",
    "FIFO_SOURCE",
    "FILE_TIMER",
    "HTTP_CLIENT",
    "KILL_WATCH",
    "LOCAL_TIMER",
    "LOGGERS",
    "REAPER",
    "STACK_CAPTURE",
    "UNKILLABLE",
    "USER_FIFOS",
]

REAPER = "timer_core.reaper"
EXPIRY = "timer_core.expiry"
KILL_WATCH = "timer_core.kill_watch"
UNKILLABLE = "timer_core.unkillable"
EXIT_WATCHER = "timer_core.exit_watcher"
EVENTS = "timer_core.events"
DESCRIPTORS = "timer_core.descriptors"
DUMP_DIRS = "timer_core.dump_dirs"
STACK_CAPTURE = "timer_core.stack_capture"
FIFO_SOURCE = "timer_core.fifo_source"
FIFO_DIR = "timer_core.fifo_dir"
USER_FIFOS = "timer_core.user_fifos"
API = "timer_core.api"
LOCAL_TIMER = "timer_core.local_timer"
FILE_TIMER = "timer_core.file_based_local_timer"
DEBUG_INFO = "timer_core.debug_info_logging"
HTTP_CLIENT = "timer_core.http_client"

# Each name and what an operator finds under it; docs/logging.md shows the same.
LOGGERS = {
    REAPER: "every refused timer request (WARNING), from any source, and pids it will not signal",
    EXPIRY: "one line per expiry outcome: a kill, an observe-only expiry, a worker "
    "found gone (INFO); a failed kill or escalation (WARNING)",
    KILL_WATCH: "kills overdue, and when none is any more",
    UNKILLABLE: "a worker still alive --unkillable-after seconds after its SIGKILL, with "
    "its /proc state and wait channel, and its exit at last (WARNING)",
    EXIT_WATCHER: "workers watched through pidfds, and a pidfd that could not be opened",
    EVENTS: "an event listener (the recorder, the metrics) that failed on an event",
    DESCRIPTORS: "an open file limit that could not be raised",
    DUMP_DIRS: "stack dump directories made, and ones refused as unsafe",
    STACK_CAPTURE: "a py-spy another user could replace, not run (WARNING, once)",
    FIFO_SOURCE: "the --fifo: deleted or replaced and made again, read errors",
    FIFO_DIR: "the --fifo-dir: its mode tightened, per-user FIFOs replaced",
    USER_FIFOS: "the per-user FIFOs: ones skipped, made again, read errors",
    API: "torch's TimerServer interface: workers reaped, reaping that failed",
    LOCAL_TIMER: "LocalTimerServer starting, stopping, its request queue failing",
    FILE_TIMER: (
        "FileTimerServer starting and stopping; a fail-open FileTimerClient's outage and "
        "its end (one line each)"
    ),
    DEBUG_INFO: "torch's debug-info hook: timers that expired for a run",
    HTTP_CLIENT: (
        "HttpTimerClient: a write the service applied but could not record yet; a "
        "fail-open client's outage and its end (one line each)"
    ),
}
