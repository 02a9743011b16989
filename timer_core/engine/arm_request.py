"""What a source hands the engine: one request (``ArmRequest``), and where it came from
(``Origin``).

Every source builds the request once, from its own form of it (an HTTP body, a FIFO
line, a queue item, a recorded row), and the engine takes it whole: the checks of
``admission`` and ``request_text`` apply to it alike whatever the source, so nothing one
path refuses can enter by another.

The fields are typed as a valid request's, but hold what was received: the queue
carries any Python object, so a pid may be a string or an integer of 5,000 digits.
``admission`` tests each type before its value, and a refusal keeps the values as
received (escaped, see ``emitter``).
"""

from __future__ import annotations

import signal as signal_module
from dataclasses import dataclass

from .labels import Labels

__all__ = ["LIBRARY", "ArmRequest", "Origin"]


@dataclass(frozen=True, slots=True)
class ArmRequest:
    """Arm, heartbeat or release the timer of (``pid``, ``scope_id``), in torch's terms."""

    pid: int
    scope_id: str
    # Unix seconds; a value < 0 releases (torch's wire format).
    expiration_time: float
    # The signal sent at the deadline; <= 0 observes only (torch's convention).
    signal: int = signal_module.SIGKILL
    # A signal on which the worker dumps its own stack (faulthandler), if it opted in.
    dump_signal: int | None = None
    # The job and rank the request names itself; each given one overrides the worker's
    # environment (``labels.read_labels``). None: it names none.
    labels: Labels | None = None
    # How the deadline was chosen (contract 12): "explicit" (the request's own),
    # "initial" or "learned" (an "auto" request the service gave a timeout).
    timeout_source: str = "explicit"

    @property
    def is_release(self) -> bool:
        expiration = self.expiration_time
        return isinstance(expiration, int | float) and expiration < 0


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asks, as far as the source can vouch for it."""

    # The source's name, kept on the timer and its events: "http", "fifo", "queue", ...
    source: str
    # The only uid whose processes the request may target: a user's FIFO's uid, an HTTP
    # caller's. None: unrestricted (root, the service's own uid, the shared FIFO).
    owner_uid: int | None = None
    # Who asked, for the refusal's message, e.g. "uid 1001 over tcp 127.0.0.1:50312".
    requester: str = ""
    # Whether the service's own process and its ancestors may hold observe-only timers
    # (torch's tests arm them in-process); HTTP refuses them outright.
    may_observe_self: bool = True

    def describe(self) -> str:
        return self.requester or f"uid {self.owner_uid}"


# A request made in this process through the Python API (the default of the engine).
LIBRARY = Origin("api")
