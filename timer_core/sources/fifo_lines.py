"""From a FIFO's bytes to the engine: lines with a bound on each, parsed by ``wire``.

A reader gets whatever the kernel has: half a line, many lines, or the middle of an
endless one. Each FIFO keeps one ``LineSplitter``; it hands every complete line on,
holds a trailing partial line for the next read, and gives up on a line as soon as it
is longer than PIPE_BUF, so a client that never sends a newline cannot make the
service buffer without bound.

Each source keeps one ``MalformedLines``: a line that is not a request is counted,
logged and reported, and the good lines read with it still apply (``apply_request``).
The log has a share per place (``where``: one FIFO): a second user writing ``x`` lines
into its own FIFO logged 44,502 WARNING lines (7.5 MB) in 3 s (issue 20 review). Past
``LOG_BURST`` lines, a place logs ``LOG_PER_SECOND`` a second; the next line it logs
says how many were left out. Every line is still counted and reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..engine import Reaper
from ..wire import MAX_LINE_BYTES, MalformedRequest, WireRequest, parse_line

__all__ = ["LOG_BURST", "LOG_PER_SECOND", "LineSplitter", "MalformedLines", "apply_request"]

# The malformed lines one place (one FIFO) may log at once, then each second.
LOG_BURST = 20
LOG_PER_SECOND = 10


class LineSplitter:
    def __init__(
        self, on_line: Callable[[bytes], None], on_overlong: Callable[[str], None]
    ) -> None:
        self._on_line = on_line
        self._on_overlong = on_overlong
        self._partial = b""
        self._discarding = False

    def feed(self, chunk: bytes) -> int:
        """Hand on each complete, non-blank line of ``chunk``; returns how many lines
        ended in it (an over-long line that ends here counts as one)."""
        skipped = 0
        if self._discarding:
            # Still inside an over-long line that was already rejected.
            newline = chunk.find(b"\n")
            if newline < 0:
                return 0
            chunk = chunk[newline + 1 :]
            self._discarding = False
            skipped = 1
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        if len(self._partial) > MAX_LINE_BYTES:
            # A line already longer than PIPE_BUF cannot be valid: reject it now
            # rather than buffer without bound, and skip the rest of it.
            self._on_overlong(f"line over {MAX_LINE_BYTES} bytes")
            self._partial = b""
            self._discarding = True
        for line in complete:
            if line.strip():
                self._on_line(line)
        return skipped + len(complete)


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

    def parse(self, line: bytes, where: str) -> WireRequest | None:
        """The request on ``line``, or None when it is malformed (then rejected)."""
        try:
            return parse_line(line.strip())
        except MalformedRequest as error:
            self.reject(where, str(error))
            return None

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


def apply_request(
    reaper: Reaper, request: WireRequest, *, owner_uid: int | None = None, requester: str = ""
) -> bool:
    """Apply a request read from a FIFO, in torch's convention (a negative expiration
    releases). False if refused: the engine has logged it and announced it."""
    return reaper.apply(
        request.pid,
        request.scope_id,
        request.expiration_time,
        request.signal,
        source="fifo",
        dump_signal=request.dump_signal,
        owner_uid=owner_uid,
        requester=requester,
    )
