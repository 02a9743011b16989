"""Enough file descriptors for ``--max-connections`` and the kill path?

At start the service raises its soft RLIMIT_NOFILE to the hard one (``app.server``),
keeps ``kill_path_reserve`` of them free for kills, and sheds HTTP connections before
it would eat into that share (``app.access.connection_gate``). So the hard limit is
what counts: below what the connections, the reserve and the service's own files need,
``--max-connections`` is a promise the service cannot keep, and connections are shed
early.
"""

from __future__ import annotations

import resource

from app.db.database import POOL_CONNECTIONS
from app.settings import Settings
from timer_core.engine.descriptors import kill_path_reserve, pidfd_budget

from .results import Check, Result, Status

__all__ = ["CHECKS", "needed_descriptors"]

NAME = "file descriptors"
# Besides connections and the reserve: the database pool, the listening sockets, the
# FIFOs, log files, the event loop's own, and a margin for Python's.
_OWN_FILES = POOL_CONNECTIONS + 64
_UNLIMITED = 1 << 20  # as timer_core.engine.descriptors


def needed_descriptors(settings: Settings, limit: int) -> int:
    """What a service with ``settings`` needs open at most, with ``limit`` as its limit."""
    return settings.max_connections + kill_path_reserve(limit) + _OWN_FILES


def check_descriptors(settings: Settings) -> list[Result]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = _UNLIMITED if hard == resource.RLIM_INFINITY else int(hard)
    needed = needed_descriptors(settings, limit)
    shown_soft = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    if limit < needed:
        found = (
            f"hard limit {limit} (soft {shown_soft}), but --max-connections "
            f"{settings.max_connections} + {kill_path_reserve(limit)} kept for kills + "
            f"{_OWN_FILES} of the service's own need {needed}"
        )
        room = limit - kill_path_reserve(limit) - _OWN_FILES
        fewer = f"or lower --max-connections to {room}" if room > 0 else ""
        fix = (
            f"raise the hard limit to {max(needed, 65536)}: systemd LimitNOFILE=65536 in the "
            "unit's [Service]; a shell: ulimit -n 65536 (as root) before starting; docker: "
            f"--ulimit nofile=65536:65536; {fewer}"
        ).rstrip("; ")
        return [Result(NAME, Status.FAIL, found, fix)]
    found = (
        f"hard limit {limit} (soft {shown_soft}, raised to the hard one at start): "
        f"{needed} needed for {settings.max_connections} connections and "
        f"{kill_path_reserve(limit)} kept for kills; {pidfd_budget(limit)} workers watched by pidfd"
    )
    return [Result(NAME, Status.OK, found)]


CHECKS = [Check(NAME, check_descriptors, 2.0, "run 'ulimit -Hn' and 'ulimit -n' by hand")]
