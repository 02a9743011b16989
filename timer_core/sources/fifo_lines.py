"""From a FIFO's bytes to the engine's requests, in one pass: lines with a bound on
each, each parsed by ``wire`` into an ``ArmRequest`` or rejected.

A reader gets whatever the kernel has: half a line, many lines, or the middle of an
endless one. Each FIFO keeps one ``FifoLines``; it turns every complete line into a
request, holds a trailing partial line for the next read, and gives up on a line as
soon as it is longer than PIPE_BUF, so a client that never sends a newline cannot make
the service buffer without bound.

Each source keeps one ``MalformedLines``: a line that is not a request is counted,
logged and reported, and the good lines read with it still apply.
The log has a share per place (``where``: one FIFO): a second user writing ``x`` lines
into its own FIFO logged 44,502 WARNING lines (7.5 MB) in 3 s (issue 20 review). Past
``LOG_BURST`` lines, a place logs ``LOG_PER_SECOND`` a second; the next line it logs
says how many were left out. Every line is still counted and reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..engine.arm_request import ArmRequest
from ..wire import MAX_LINE_BYTES, MalformedRequest, parse_line

__all__ = ["LOG_BURST", "LOG_PER_SECOND", "FifoLines", "MalformedLines"]

# The malformed lines one place (one FIFO) may log at once, then each second.
LOG_BURST = 20
LOG_PER_SECOND = 10


class FifoLines:
    def __init__(self, where: str, malformed: MalformedLines) -> None:
        """``where`` completes "skipping a malformed ...", e.g. "FIFO line on
        /run/timers.fifo"; ``malformed`` counts and logs the lines rejected."""
        self._where = where
        self._malformed = malformed
        self._partial = b""
        self._discarding = False
        # Lines ended so far (an over-long line counts as one), requests or not.
        self.ended = 0

    def requests(self, chunk: bytes) -> list[ArmRequest]:
        """The requests on the lines that end in ``chunk``, in order; every other
        non-blank line is rejected as malformed. A trailing partial line is kept."""
        if self._discarding:
            # Still inside an over-long line that was already rejected.
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            chunk = chunk[newline + 1 :]
            self._discarding = False
            self.ended += 1
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        if len(self._partial) > MAX_LINE_BYTES:
            # A line already longer than PIPE_BUF cannot be valid: reject it now
            # rather than buffer without bound, and skip the rest of it.
            self._malformed.reject(self._where, f"line over {MAX_LINE_BYTES} bytes")
            self._partial = b""
            self._discarding = True
        self.ended += len(complete)
        found = []
        for line in complete:
            stripped = line.strip()
            if not stripped:
                continue
            try:
                found.append(parse_line(stripped))
            except MalformedRequest as error:
                self._malformed.reject(self._where, str(error))
        return found


class MalformedLines:
    def __init__(self, log: logging.Logger, on_malformed: Callable[[str], None] | None) -> None:
        """``log`` is the source's own logger; ``on_malformed(reason)`` is told of each
        line skipped (the service counts them in its metrics)."""
        self.count = 0
        self._log = log
        self._on_malformed = on_malformed
        self._monotonic = time.monotonic
        # Per place: (log tokens left, when counted, lines left out since its last line).
        # One entry per FIFO the source reads: bounded by the FIFOs, not by the lines.
        self._log_share: dict[str, tuple[float, float, int]] = {}

    def reject(self, where: str, reason: str) -> None:
        """Skip a line: ``where`` completes "skipping a malformed ...", e.g.
        "FIFO line on /run/timers.fifo"."""
        self.count += 1
        if self._on_malformed is not None:
            self._on_malformed(reason)
        now = self._monotonic()
        tokens, at, left_out = self._log_share.get(where, (LOG_BURST, now, 0))
        tokens = min(LOG_BURST, tokens + (now - at) * LOG_PER_SECOND)
        if tokens < 1.0:
            self._log_share[where] = (tokens, now, left_out + 1)
            return
        self._log_share[where] = (tokens - 1.0, now, 0)
        also = f" ({left_out} more before it not logged)" if left_out else ""
        self._log.warning("skipping a malformed %s: %s%s", where, reason, also)
