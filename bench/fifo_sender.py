"""How a bench's client processes send torch FIFO requests: torch's FileTimerClient
writes without blocking and raises when the pipe is full (the service is behind), so
the sender counts that and sends the same request again, giving nothing up.

Imported by the client scripts that ``bench.common.python`` runs (from the repository).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Sender"]


class Sender:
    def __init__(self, pause: float) -> None:
        """``pause``: seconds to wait before sending again into a full pipe."""
        self.pause = pause
        self.full = 0  # times the pipe was found full

    def __call__(self, call: Callable[..., Any], *args: Any) -> Any:
        while True:
            try:
                return call(*args)
            except (BlockingIOError, BrokenPipeError):
                self.full += 1
                time.sleep(self.pause)
