"""A stack capture's first attempt: ask the worker's own torch worker server.

A rank that runs torch's ``_WorkerServer`` answers for its Python stack (faulthandler's
``dump_traceback``) and its flight recorder (``fr_trace_json``) in milliseconds, with
no ptrace and no helper process (``worker_server_capture``). The answer is believed
only when the server is the worker's own (peer credentials name that pid,
``worker_server``) and the worker is still the process the timer was armed for when
the answer is in: a worker that exited meanwhile leaves its pid to another process,
whose answer is not this worker's evidence.

A worker that listens on no socket costs no note (nothing better was passed over); any
other refusal is a note, and the capture goes on with py-spy. A torch rank with no
server still listens for gloo, which never answers ``ping``: it costs ``PING_SECONDS``
and a timeout note, which is why that window is short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..engine.process import ProcessIdentity, identify
from .flight_recorder import MAX_DUMP_BYTES
from .worker_privileges import credentials_of
from .worker_server_capture import capture_worker_server
from .worker_server_http import Refusal, Why

__all__ = ["WORKER_SERVER", "ServerStack", "stack_from_worker_server"]

WORKER_SERVER = "worker-server"
# Below this a server is not worth asking: a round trip and the /proc reads take more.
_MIN_SECONDS = 0.02
# How long the server has to answer ``ping`` (torch answers it in about a millisecond,
# without the GIL): a rank's other listeners never answer it, and a rank with no
# server must not cost py-spy its time.
PING_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class ServerStack:
    text: str  # faulthandler's traceback: every thread, the main one last
    flight_recorder: bytes | None  # fr_trace_json's JSON object, None: see notes
    notes: tuple[str, ...]  # why the flight recorder is missing, if it is


def stack_from_worker_server(
    identity: ProcessIdentity, give_up_at: float
) -> ServerStack | str | None:
    """The stack of ``identity`` from its own worker server, asked until
    ``give_up_at`` (monotonic); else a note saying why not, or None when the worker
    runs no server."""
    left = give_up_at - time.monotonic()
    if left < _MIN_SECONDS:
        return f"{WORKER_SERVER}: no time left in the budget"
    # The reading side refuses a larger recorder anyway (``load_flight_recorder``):
    # a bigger answer is cut off at the socket, not carried to it.
    answer = capture_worker_server(
        identity.pid, left, find_within=PING_SECONDS, flight_recorder_limit=MAX_DUMP_BYTES
    )
    if isinstance(answer, Refusal):
        return None if answer.why == Why.NO_SERVER else f"{WORKER_SERVER}: {answer}"
    worker = credentials_of(identity.pid)
    if (
        worker is None
        or (identity.uid is not None and worker.uid != identity.uid)
        or not identity.matches(identify(identity.pid))
    ):
        return f"{WORKER_SERVER}: the worker exited during the capture"
    recorder = answer.flight_recorder
    if isinstance(recorder, Refusal):
        return ServerStack(answer.traceback, None, (f"flight recorder: {recorder}",))
    return ServerStack(answer.traceback, recorder, ())
