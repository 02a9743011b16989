"""Refuse at start every place the service would make or write files in, as root, below
a directory another user can change.

The service makes directories, FIFOs, a socket and the database in these places. Below
a directory another user owns or can write (not sticky), that user can swap what the
service makes for a link to any file, and root would then open, chmod or chown that
file: it happened with ``--stack-dir`` (docs/security.md, "Files the service and
workers write"). The parts themselves make what they need by descriptor
(``timer_core.safe_dirs``) and refuse too; checking here, before anything starts, says
which directory and why in one line instead of a traceback from inside the app.
"""

from __future__ import annotations

import os

from app.db.private_files import sqlite_path
from app.settings import Settings
from timer_core.safe_dirs import UnsafeDirectoryError, check_directory

__all__ = ["checked_places", "refuse_unsafe_paths"]


def checked_places(settings: Settings) -> list[tuple[str, str, dict[str, bool]]]:
    """(what, directory, its rules for ``check_directory``) for each place named: what
    ``refuse_unsafe_paths`` refuses at start, and ``timer-service doctor`` reports."""
    # A hub (app.hub) keeps no timers: it opens none of a worker's node's places.
    places = [] if settings.hub else _worker_node_places(settings)
    if settings.uds:
        places.append(("--uds's directory", _parent(settings.uds), {"sticky_last": True}))
    database = sqlite_path(settings.db_url)
    if database is not None:
        # Not sticky: SQLite makes its -wal and -journal there by name.
        places.append(("the database's directory", _parent(str(database)), {}))
    return places


def _worker_node_places(settings: Settings) -> list[tuple[str, str, dict[str, bool]]]:
    """The places of the stack dumps and the FIFOs (app.worker_node)."""
    places: list[tuple[str, str, dict[str, bool]]] = []
    if settings.stack_dir and settings.capture_stacks:
        # The default one is judged when it is used: an unsafe one costs only the dump
        # directories (with a WARNING), not the watchdog.
        places.append(("--stack-dir", settings.stack_dir, {"follow_last": False}))
    if settings.fifo_dir:
        # Its mode is tightened to 0755 at start; its owner must be the service's.
        places.append(("--fifo-dir", settings.fifo_dir, {"follow_last": False, "loose_last": True}))
    # One FIFO or socket may sit in a sticky directory such as /tmp: others cannot move it.
    if settings.fifo:
        places.append(("--fifo's directory", _parent(settings.fifo), {"sticky_last": True}))
    return places


def _parent(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def refuse_unsafe_paths(settings: Settings) -> None:
    """Exit with one line naming the directory, why, and what to do, if one is unsafe."""
    for what, directory, rules in checked_places(settings):
        try:
            check_directory(directory, what, **rules)
        except UnsafeDirectoryError as error:
            raise SystemExit(f"timer-service: {error}") from None
        except OSError as error:
            why = error.strerror or error
            raise SystemExit(f"timer-service: cannot check {what} {directory}: {why}") from None
