"""Request sources: where workers' requests come from, turned into calls on the engine.

``FifoSource`` reads torch's JSON lines from one FIFO (``--fifo``, and the
``FileTimerServer``); ``UserFifos`` reads one FIFO per user (``--fifo-dir``), kept in a
``FifoDirectory``, and lets each user's requests target only that user's processes.
Both turn their byte streams into the engine's requests in one pass (``fifo_lines``:
bounded lines, each parsed by ``timer_core.wire``, the one codec, into an
``ArmRequest``), and hand each to the engine with their ``Origin``.

A package of their own, beside the engine rather than in it, because that is the
flow: workers → sources → engine. A source depends on the engine's request API
(``Reaper``) and the wire format; the engine knows no source, so a new one (the
service's HTTP routes are another) needs no change to it.

Loggers take their names from ``timer_core.log_names`` (``timer_core.fifo_source``,
...): operators filter on them (docs/logging.md).
"""

from .fifo_dir import FifoDirectory, FifoDirError, resolve_uids
from .fifo_source import FifoSource
from .user_fifos import UserFifos

__all__ = ["FifoDirError", "FifoDirectory", "FifoSource", "UserFifos", "resolve_uids"]
