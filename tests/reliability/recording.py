"""A signaller that records instead of signalling: for fuzzers that name arbitrary
pids of this machine, where a real signal could hit anything."""

from __future__ import annotations

from timer_core import ProcessIdentity, ProcessSignaller
from timer_core.engine.process import SignalOutcome


class RecordingSignaller(ProcessSignaller):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int, int]] = []

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        self.sent.append((identity.pid, signum))
        return SignalOutcome(True, "delivered", "")

    def children(self, identity: ProcessIdentity) -> list[ProcessIdentity]:
        return []
