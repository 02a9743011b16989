"""timer_core: a drop-in replacement for ``torch.distributed.elastic.timer``.

``import timer_core as timer`` gives torch's public names, backed by a
deadline-driven reaper that kills on time and never signals the wrong process.
"""

from .api import RequestQueue, TimerClient, TimerRequest, TimerServer, configure, expires
from .clock import Clock, ManualClock, SystemClock
from .events import EventBus, EventKind, TimerEvent
from .file_based_local_timer import FileTimerClient, FileTimerRequest, FileTimerServer
from .http_client import HttpTimerClient, TimerServiceError
from .local_timer import LocalTimerClient, LocalTimerServer, MultiprocessingRequestQueue
from .process import ProcessIdentity, ProcessSignaller, identify
from .reaper import Reaper, RefusedError, TimerView

__all__ = [
    "Clock",
    "EventBus",
    "EventKind",
    "FileTimerClient",
    "FileTimerRequest",
    "FileTimerServer",
    "HttpTimerClient",
    "LocalTimerClient",
    "LocalTimerServer",
    "ManualClock",
    "MultiprocessingRequestQueue",
    "ProcessIdentity",
    "ProcessSignaller",
    "Reaper",
    "RefusedError",
    "RequestQueue",
    "SystemClock",
    "TimerClient",
    "TimerEvent",
    "TimerRequest",
    "TimerServer",
    "TimerServiceError",
    "TimerView",
    "configure",
    "expires",
    "identify",
]
