"""A FUSE filesystem that never answers, mounted over a directory (needs root and
/dev/fuse): every lookup below it sleeps in the kernel until the filesystem is torn
down, as on a user's FUSE mount whose daemon stopped, or a hard NFS mount whose server
is gone. No FUSE daemon or library is needed: nobody ever reads ``/dev/fuse``, so the
kernel's first request (INIT) is never answered. Closing the descriptor aborts the
connection: the sleepers get ENOTCONN, and the mount is then detached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["never_answering_fuse"]

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2


@contextmanager
def never_answering_fuse(directory: Path) -> Iterator[None]:
    """Mount it over ``directory`` for the block; skips the test where it cannot."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse to mount a FUSE filesystem")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fuse = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fuse},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"timer-test", bytes(directory), b"fuse", _MS_NOSUID | _MS_NODEV, options):
        error = ctypes.get_errno()
        os.close(fuse)
        pytest.skip(f"cannot mount FUSE here: {os.strerror(error)}")
    try:
        yield
    finally:
        os.close(fuse)
        libc.umount2(bytes(directory), _MNT_DETACH)
