"""Torch's FIFO wire format (JSON lines, version 1), parsed strictly.

One request per line, each line at most PIPE_BUF bytes::

    {"version": 1, "pid": int, "scope_id": str, "expiration_time": float, "signal": int}

One optional key is ours: ``"dump_signal": int``, the signal on which a worker that
opted in dumps its own stack (torch's server ignores keys it does not know).

A line is read straight into the engine's ``ArmRequest``, and written from one.
"""

from __future__ import annotations

import json
import math
import select
from typing import Any

from .engine.arm_request import ArmRequest

__all__ = ["MAX_LINE_BYTES", "MalformedRequest", "encode", "parse_line", "to_json"]

MAX_LINE_BYTES = select.PIPE_BUF


class MalformedRequest(ValueError):
    """A line that is not a valid v1 request; the message says what is wrong."""


def _require(payload: dict[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    if key not in payload:
        raise MalformedRequest(f"missing field {key!r}")
    value = payload[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise MalformedRequest(f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def parse_line(line: bytes) -> ArmRequest:
    if len(line) > MAX_LINE_BYTES:
        raise MalformedRequest(f"line of {len(line)} bytes exceeds PIPE_BUF ({MAX_LINE_BYTES})")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedRequest(f"not UTF-8: {error.reason} at byte {error.start}") from None
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise MalformedRequest(f"not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise MalformedRequest(f"expected a JSON object, got {type(payload).__name__}")
    version = payload.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise MalformedRequest(f"unsupported version {version!r}; only version 1 is known")
    try:
        expiration_time = float(_require(payload, "expiration_time", (int, float)))
    except OverflowError:  # an integer of hundreds of digits, valid JSON
        raise MalformedRequest("expiration_time must be finite") from None
    if not math.isfinite(expiration_time):
        raise MalformedRequest("expiration_time must be finite")
    return ArmRequest(
        pid=_require(payload, "pid", (int,)),
        scope_id=_require(payload, "scope_id", (str,)),
        expiration_time=expiration_time,
        signal=_require(payload, "signal", (int,)),
        dump_signal=_require(payload, "dump_signal", (int,)) if "dump_signal" in payload else None,
    )


def to_json(request: ArmRequest) -> str:
    """The JSON object torch's FileTimerClient writes for this request, without the
    newline: the one encoder of the format (``FileTimerRequest.to_json`` is this)."""
    payload: dict[str, Any] = {
        "version": 1,
        "pid": request.pid,
        "scope_id": request.scope_id,
        "expiration_time": request.expiration_time,
        "signal": request.signal,
    }
    if request.dump_signal is not None:
        payload["dump_signal"] = request.dump_signal
    return json.dumps(payload)


def encode(request: ArmRequest) -> bytes:
    """The whole line, as written to the FIFO."""
    return (to_json(request) + "\n").encode()
