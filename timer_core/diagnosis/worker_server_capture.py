"""A worker's Python stack and flight recorder, taken over torch's worker server within
a time budget: the evidence ``worker-server`` of contract 10, before any signal.

``capture_worker_server(pid, budget)`` finds the server (``worker_server``), asks it
for ``dump_traceback`` and ``fr_trace_json``, and returns both, or why it could not
(the caller then falls back to py-spy). The stack is the answer that matters: without
it the capture is refused. A flight recorder that cannot be had is a reason beside the
stack, not a failure of the capture. Both answers are checked for their shape (a
faulthandler traceback, a JSON object) so that garbage is refused, not stored.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .worker_server import Endpoint, fetch, find_worker_server
from .worker_server_http import Refusal, Why

__all__ = [
    "FLIGHT_RECORDER_LIMIT",
    "TRACEBACK_LIMIT",
    "WorkerServerCapture",
    "capture_worker_server",
]

# faulthandler prints at most 100 frames a thread (and 100 threads): some 2 MB at most.
TRACEBACK_LIMIT = 4 * 1024 * 1024
# The flight recorder keeps 2,000 entries by default (TORCH_FR_BUFFER_SIZE), about
# 1 kB each with their sizes and stack frames.
FLIGHT_RECORDER_LIMIT = 8 * 1024 * 1024
_TRACEBACK_STARTS = ("Current thread 0x", "Thread 0x")


@dataclass(frozen=True, slots=True)
class WorkerServerCapture:
    endpoint: Endpoint
    traceback: str  # faulthandler's text: every thread, most recent call first
    flight_recorder: bytes | Refusal  # fr_trace_json's JSON object, or why it is missing
    seconds: float  # from the start of the capture to its last answer


def capture_worker_server(
    pid: int,
    budget: float,
    *,
    find_within: float | None = None,
    traceback_limit: int = TRACEBACK_LIMIT,
    flight_recorder_limit: int = FLIGHT_RECORDER_LIMIT,
) -> WorkerServerCapture | Refusal:
    """``pid``'s stack and flight recorder from its own worker server, all within
    ``budget`` seconds, or why its stack could not be had that way. With
    ``find_within``, the server must be found (answer ``ping``) within that many
    seconds: torch answers ``ping`` from its own thread, without the GIL, in about a
    millisecond, while a rank's other listeners (gloo's, a TCPStore) never answer it,
    so a rank with no server would otherwise cost the whole budget."""
    started = time.monotonic()
    deadline = started + budget
    found_by = deadline if find_within is None else min(deadline, started + find_within)
    endpoint = find_worker_server(pid, found_by)
    if isinstance(endpoint, Refusal):
        return endpoint
    traceback = _traceback(fetch(endpoint, "dump_traceback", traceback_limit, deadline))
    if isinstance(traceback, Refusal):
        return traceback
    recorder = _json_object(fetch(endpoint, "fr_trace_json", flight_recorder_limit, deadline))
    return WorkerServerCapture(endpoint, traceback, recorder, time.monotonic() - started)


def _traceback(answer: bytes | Refusal) -> str | Refusal:
    if isinstance(answer, Refusal):
        return answer
    text = answer.decode("utf-8", "replace")
    if not text.startswith(_TRACEBACK_STARTS):
        return Refusal(Why.GARBAGE, f"dump_traceback: not a faulthandler traceback: {text[:80]!r}")
    return text


def _json_object(answer: bytes | Refusal) -> bytes | Refusal:
    if isinstance(answer, Refusal):
        return answer
    try:
        parsed = json.loads(answer)
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
        return Refusal(Why.GARBAGE, f"fr_trace_json: not JSON: {error}")
    if not isinstance(parsed, dict):
        return Refusal(Why.GARBAGE, "fr_trace_json: not a JSON object")
    return answer
