"""File descriptors: the process's limit, how many are open, and the share of them kept
for the kill path.

A kill needs descriptors: a pidfd to signal through, a /proc file to check the
process's identity, pipes for the stack capture. At EMFILE the kill fails, so
everything else that holds descriptors for long (HTTP connections, the pidfds that
watch workers exit) stops short of the limit and leaves ``kill_path_reserve`` free.
"""

from __future__ import annotations

import errno
import logging
import os
import resource

from .. import log_names

__all__ = [
    "MIN_RESERVE",
    "descriptor_limit",
    "kill_path_reserve",
    "open_descriptors",
    "pidfd_budget",
    "raise_descriptor_limit",
]

logger = logging.getLogger(log_names.DESCRIPTORS)

# Enough for a burst of kills: each takes a pidfd and a /proc file, and each stack
# capture a few pipes for its helper process, all briefly.
MIN_RESERVE = 128
# No sane process has more; stands in for RLIM_INFINITY.
_UNLIMITED = 1 << 20


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE: opening more descriptors fails with EMFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED if soft == resource.RLIM_INFINITY else int(soft)


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the default soft limit, 1024, is
    low for a service that holds a pidfd per worker). Returns (before, now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            # e.g. a hard limit above fs.nr_open: keep what we have, and say so.
            logger.warning("could not raise the open file limit to %s: %s", hard, error)
    before = _UNLIMITED if soft == resource.RLIM_INFINITY else int(soft)
    return before, descriptor_limit()


def open_descriptors() -> int:
    """How many descriptors this process has open now (one listing of /proc/self/fd)."""
    try:
        # The listing's own directory descriptor is in it: not counted.
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError as error:
        if error.errno in (errno.EMFILE, errno.ENFILE):
            return descriptor_limit()  # not even one left to list them with
        raise


def kill_path_reserve(limit: int) -> int:
    """Descriptors kept free for kills: an eighth of the limit, at least MIN_RESERVE,
    at most half of it."""
    return min(limit // 2, max(MIN_RESERVE, limit // 8))


def pidfd_budget(limit: int) -> int:
    """How many workers may be watched through pidfds (the rest are checked once a
    second): half of what the reserve leaves, so sockets and the database keep room."""
    return max(1, (limit - kill_path_reserve(limit)) // 2)
