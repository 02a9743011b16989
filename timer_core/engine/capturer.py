"""The engine's side of stack capture: what a capture hands back, and what a capturer
must offer.

The kill path waits for a stack only within a budget (``CaptureRunner``) and carries it
in the expiry's events. How a stack is taken (torch's worker server, py-spy, the
worker's own faulthandler dump, what /proc shows) is ``timer_core.diagnosis``'s
business: the engine depends on this protocol alone, and ``diagnosis.StackCapturer``,
or a test's fake, plugs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .process import ProcessIdentity
from .timers import Timer

__all__ = ["CapturedStack", "Capturer", "RankStack"]


@dataclass(frozen=True, slots=True)
class CapturedStack:
    # "worker-server", "py-spy", "py-spy (python only)", "faulthandler" or "proc"
    method: str
    text: str
    seconds: float
    truncated: bool = False
    # Why better methods were passed over, e.g. "py-spy: permission denied".
    notes: tuple[str, ...] = ()
    # The worker's flight recorder as its worker server answered it (bounded bytes),
    # carried to whoever records the incident; the engine does not read it.
    flight_recorder: bytes | None = None


@dataclass(frozen=True, slots=True)
class RankStack:
    """One process of a job as an incident captured it, before any signal to the job."""

    timer: Timer  # one of its armed timers (its rank, pid, node)
    stack: CapturedStack | None
    note: str  # why there is no stack ("" when there is one)
    expiring: bool  # its own timer fell due with the incident's (it is about to be signalled)


class Capturer(Protocol):
    # How long after its deadline a kill may wait for the stack, in seconds.
    budget: float

    def capture(
        self, identity: ProcessIdentity, dump_signal: int | None, *, give_up_at: float
    ) -> CapturedStack:
        """The best stack of ``identity`` to be had by ``give_up_at``
        (``time.monotonic()``). Called on a capture thread of its own, never the
        kill's: it may block, and the kill goes ahead without it."""
        ...
