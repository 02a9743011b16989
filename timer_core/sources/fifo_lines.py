"""Cutting a FIFO's byte stream into request lines, with a bound on each line.

A reader gets whatever the kernel has: half a line, many lines, or the middle of an
endless one. Each FIFO keeps one ``LineSplitter``; it hands every complete line on,
holds a trailing partial line for the next read, and gives up on a line as soon as it
is longer than PIPE_BUF, so a client that never sends a newline cannot make the
service buffer without bound.
"""

from __future__ import annotations

from collections.abc import Callable

from ..wire import MAX_LINE_BYTES

__all__ = ["LineSplitter"]


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
