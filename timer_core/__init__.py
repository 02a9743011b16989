"""timer_core: a drop-in replacement for ``torch.distributed.elastic.timer``.

``import timer_core as timer`` gives torch's public names, backed by a
deadline-driven reaper that kills on time and never signals the wrong process.

Torch's modules keep their names at the top (``api``, ``local_timer``,
``file_based_local_timer``, ``debug_info_logging``), beside ``http_client``, torch's
hooks (``compat_hooks``) and ``wire``, the one codec of the FIFO format. Below them:
``engine`` (the reaper and its parts), ``sources`` (the FIFO readers that feed it) and
``diagnosis`` (stack capture, and what the stacks say).
"""

from .api import RequestQueue, TimerClient, TimerRequest, TimerServer, configure, expires
from .engine import (
    Clock,
    EventBus,
    EventKind,
    ManualClock,
    ProcessIdentity,
    ProcessSignaller,
    Reaper,
    RefusedError,
    SystemClock,
    Timer,
    TimerEvent,
    TimerState,
    identify,
)
from .file_based_local_timer import (
    FileTimerClient,
    FileTimerRequest,
    FileTimerServer,
    TimerFifoUnreachable,
)
from .http_client import HttpTimerClient, TimerServiceError, TimerServiceUnreachable
from .local_timer import LocalTimerClient, LocalTimerServer, MultiprocessingRequestQueue

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
    "Timer",
    "TimerClient",
    "TimerEvent",
    "TimerFifoUnreachable",
    "TimerRequest",
    "TimerServer",
    "TimerServiceError",
    "TimerServiceUnreachable",
    "TimerState",
    "configure",
    "expires",
    "identify",
]
