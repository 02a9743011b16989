"""The service's logging: one format for its own lines and uvicorn's, written to
stderr by a thread of its own.

One record is one line: a line break inside a message is escaped, and the lines
of a traceback are indented, so nothing a worker sent (a scope, a path) can
start a line that looks like a record of its own.

The reaper logs each kill on the thread that sent it. Writing to stderr there
would let a slow reader of stderr (a full pipe, a stalled journal) delay the
next kill, so every thread only queues its record, and one listener thread
writes them. ``logging.shutdown()`` (at exit, and before the stall exit) drains
the queue first; ``flush_logs()`` drains it on the way (before a refusal is printed
to stderr, so it comes last).

Alembic's own INFO lines (one per migration, with the revision's whole docstring) are
not shown: the service logs one line saying where the database came from and is.
"""

from __future__ import annotations

import copy
import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

from app.settings import LOG_LEVELS

__all__ = ["FORMAT", "LineFormatter", "configure_logging", "flush_logs"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every character str.splitlines() breaks a line at, escaped.
_LINE_BREAKS = str.maketrans(
    {char: repr(char)[1:-1] for char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}
)


class LineFormatter(logging.Formatter):
    """``FORMAT``, one line per record; a traceback follows on indented lines."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        escaped = copy.copy(record)
        escaped.message = record.message.translate(_LINE_BREAKS)
        return super().formatMessage(escaped)

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# uvicorn installs handlers of its own, in another format, unless told not to
# (log_config=None); these loggers then hand their records to ours.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class _QueueToStream(QueueHandler):
    """Queues records for a listener thread; closing it drains the queue.

    The record is formatted here, before it is queued (QueueHandler.prepare), so the
    listener only writes finished lines."""

    def __init__(self, stream: TextIO) -> None:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(records)
        self.setFormatter(LineFormatter())
        writer = logging.StreamHandler(stream)
        writer.setFormatter(logging.Formatter("%(message)s"))
        self.listener = QueueListener(records, writer)
        self.listener.start()
        self._listening = True

    def flush(self) -> None:
        """Write out what is queued now: the listener stops (draining the queue) and
        starts again."""
        if self._listening:
            self.listener.stop()
            self.listener.start()

    def close(self) -> None:
        if self._listening:
            self._listening = False
            self.listener.stop()  # writes out what is queued, then ends the thread
        super().close()


def configure_logging(level: str, *, access_log: bool, stream: TextIO | None = None) -> None:
    """Every logger, uvicorn's included, writes ``FORMAT`` lines to ``stream``
    (stderr). uvicorn's access log (``uvicorn.access``, INFO) is shown when
    ``access_log`` is true, whatever the level; pass the same flag to uvicorn."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(_QueueToStream(stream or sys.stderr))
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True
        named.setLevel(logging.NOTSET)
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    # app.service says in one line what the migrations did; alembic's lines stay for
    # --log-level debug (its warnings and errors always show).
    logging.getLogger("alembic").setLevel(
        logging.NOTSET if level.lower() == "debug" else logging.WARNING
    )


def flush_logs() -> None:
    """Write every record queued so far (they are written by a thread of their own)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
