"""What explains a hang.

- Before the kill: capture the stuck worker's stack (``stack_capture``: py-spy, the
  worker's own faulthandler dump, or what ``/proc`` shows), within a time budget. The
  dump files and their directories are written by workers and read by the service,
  which trusts no path on the way (``dump_files``, ``dump_dirs``); helper programs
  run bounded (``bounded_subprocess``).
- After it: read the captured stacks (``frames``), or what ``/proc`` said where there
  was none (``proc_state``), and name the rank of a job that hung (``incident``).
  That part is pure: it reads stack text, and runs no process.
- Which collective hung: a worker running torch's own worker server is asked for its
  stack and flight recorder (``worker_server``, ``worker_server_capture``: found from
  the worker's own sockets, trusted only when they are its own), and the ranks' flight
  recorders are read (``flight_recorder``) and compared per process group
  (``collectives``, ``collective_phrases``), pure like the stacks.

Diagnosis plugs into the engine (a capturer for the kill path, a listener for the dump
directories); the engine does not depend on it.

Loggers take their names from ``timer_core.log_names`` (``timer_core.dump_dirs``, ...):
operators filter on them (docs/logging.md).
"""

from .collectives import CollectiveAnalysis, CollectiveFinding, analyse_collectives
from .dump_dirs import DumpDirMaker
from .dump_files import DumpPathError, default_stack_dir
from .flight_recorder import RankRecorder, load_flight_recorder, read_flight_recorder
from .frames import Frame, StackFrames, parse_stack
from .incident import (
    IncidentAnalysis,
    RankCapture,
    RankResult,
    analyse,
    evidence_method,
    rank_ranges,
)
from .proc_report import hide_kernel_stack
from .proc_sockets import kernel_address
from .proc_state import ProcState, read_proc_report
from .stack_capture import StackCapturer, dump_stack_on, faulthandler_path
from .tcp_diag import established_owner
from .worker_server_capture import WorkerServerCapture, capture_worker_server

__all__ = [
    "CollectiveAnalysis",
    "CollectiveFinding",
    "DumpDirMaker",
    "DumpPathError",
    "Frame",
    "IncidentAnalysis",
    "ProcState",
    "RankCapture",
    "RankRecorder",
    "RankResult",
    "StackCapturer",
    "StackFrames",
    "WorkerServerCapture",
    "analyse",
    "analyse_collectives",
    "capture_worker_server",
    "default_stack_dir",
    "dump_stack_on",
    "established_owner",
    "evidence_method",
    "faulthandler_path",
    "hide_kernel_stack",
    "kernel_address",
    "load_flight_recorder",
    "parse_stack",
    "rank_ranges",
    "read_flight_recorder",
    "read_proc_report",
]
