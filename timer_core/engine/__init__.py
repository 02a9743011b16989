"""The engine: the live timers, and the one thread that kills the workers whose
deadlines pass.

The ``Reaper`` is its face: sources (the FIFOs, the service's HTTP routes, the
torch-compatible servers) call its request methods, and listeners get its events.
Its parts, one idea per module:

- the timers: ``arm_request`` (a request as every source hands it, and who asks),
  ``reaper`` (requests that arm, and the step that reaps), ``admission``
  (the checks a request passes; ``request_text``, the rule for its scope id),
  ``timer_book`` (the live timers under the lock, with the releases and reads),
  ``timer_table`` (by key, id and uid), ``deadline_heap`` (what is due when),
  ``timers`` (the records), ``reaper_loop`` (the thread);
- the kill path: ``expiry`` (capture, then kill, never waiting unbounded),
  ``capturer`` and ``capture_runner`` (a stack within the budget), ``kill_outcomes``
  (signal, and record what happened), ``kill_watch`` (kills overdue), ``unkillable``
  (workers still alive after their SIGKILL, looked at off the kill path);
- what it tells: ``states`` (the states and kinds, and which state each kind leaves),
  ``event_details`` (what each kind says), ``events`` (the event and its bus),
  ``emitter`` (building them);
- the workers: ``process`` (identity and safe signalling), ``workers`` and
  ``exit_watcher`` (their exits, on a ``poll_thread``), ``labels`` (job and rank),
  ``descriptors`` (the descriptors kept for kills);
- ``clock`` (time, injectable) and ``snapshot`` (reads that never hold the lock).

The engine imports nothing else of ``timer_core`` but its table of logger names
(``timer_core.log_names``): the request sources (``timer_core.sources``), the stack
capture (``timer_core.diagnosis``) and the torch-compatible surface all build on it,
never the other way round.

Loggers take their names from ``timer_core.log_names`` (``timer_core.reaper``,
``timer_core.expiry``, ...): operators filter on them (docs/logging.md).
"""

from .admission import RefusedError
from .arm_request import ArmRequest, Origin
from .capturer import CapturedStack, Capturer, RankStack
from .clock import Clock, ManualClock, SystemClock
from .events import EventBus, Listener, TimerEvent
from .labels import Labels, read_labels
from .process import ProcessIdentity, ProcessSignaller, SignalOutcome, identify
from .reaper import Reaper
from .reaper_loop import LoopHealth
from .snapshot import ReadsThrottled
from .states import END_KINDS, EventKind, TimerState
from .timers import RefusedRequest, Timer

__all__ = [
    "END_KINDS",
    "ArmRequest",
    "CapturedStack",
    "Capturer",
    "Clock",
    "EventBus",
    "EventKind",
    "Labels",
    "Listener",
    "LoopHealth",
    "ManualClock",
    "Origin",
    "ProcessIdentity",
    "ProcessSignaller",
    "RankStack",
    "ReadsThrottled",
    "Reaper",
    "RefusedError",
    "RefusedRequest",
    "SignalOutcome",
    "SystemClock",
    "Timer",
    "TimerEvent",
    "TimerState",
    "identify",
    "read_labels",
]
