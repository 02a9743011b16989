"""Engine events made by hand, for the recorder and retention tests, and request lines
in torch's FIFO format."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from timer_core import TimerEvent


def event(seq: int, kind: str, timer_id: int, state: str = "active") -> TimerEvent:
    return TimerEvent(
        seq=seq,
        kind=kind,
        timer_id=timer_id,
        pid=100,
        scope_id="s",
        at=float(seq),
        state=state,
        signal=9,
        source="test",
        acquired_at=1.0,
        expiration_time=5.0,
        process_create_time=1.0,
    )


def refused(seq: int, **changes: Any) -> TimerEvent:
    """A refused request (no timer), with ``changes`` to its fields."""
    made = TimerEvent(
        seq=seq,
        kind="refused",
        timer_id=None,
        pid=100,
        scope_id="s",
        at=float(seq),
        state="refused",
        signal=9,
        source="test",
        acquired_at=1.0,
        expiration_time=1.0,
    )
    return dataclasses.replace(made, **changes)


def torch_line(pid: int, scope: str, expiration_time: float, signal: int = 9) -> bytes:
    """One request line as torch's FileTimerClient writes it (``expiration_time`` -1: a
    release)."""
    payload = {
        "version": 1,
        "pid": pid,
        "scope_id": scope,
        "expiration_time": expiration_time,
        "signal": signal,
    }
    return json.dumps(payload).encode() + b"\n"
