"""The engine: the live timers, and the one thread that kills the workers whose
deadlines pass.

The ``Reaper`` is its face: sources (the FIFOs, the service's HTTP routes, the
torch-compatible servers) call its request methods, and listeners get its events.
Everything else here is one part of it, one idea per module: the clock it reads,
process identity and safe signalling, the events and their bus, what happens at an
expiry (the kill, its outcomes, the overdue watch), the workers it watches exit,
and the reads of its timers.

The engine imports nothing else of ``timer_core``: the request sources
(``timer_core.sources``), the stack capture (``timer_core.diagnosis``) and the
torch-compatible surface all build on it, never the other way round.

Loggers keep the names they had before the engine became a package
(``timer_core.reaper``, ``timer_core.expiry``, ...): operators filter on them.
"""

from .admission import RefusedError
from .capturer import CapturedStack, Capturer
from .clock import Clock, ManualClock, SystemClock
from .events import END_KINDS, EVENT_KINDS, EventBus, EventKind, Listener, TimerEvent
from .labels import Labels, read_labels
from .process import ProcessIdentity, ProcessSignaller, SignalOutcome, identify
from .reaper import Reaper
from .snapshot import ReadsThrottled
from .timers import TimerView

__all__ = [
    "END_KINDS",
    "EVENT_KINDS",
    "CapturedStack",
    "Capturer",
    "Clock",
    "EventBus",
    "EventKind",
    "Labels",
    "Listener",
    "ManualClock",
    "ProcessIdentity",
    "ProcessSignaller",
    "ReadsThrottled",
    "Reaper",
    "RefusedError",
    "SignalOutcome",
    "SystemClock",
    "TimerEvent",
    "TimerView",
    "identify",
    "read_labels",
]
