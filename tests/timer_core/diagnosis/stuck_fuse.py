"""A FUSE filesystem that never answers, mounted over a directory (needs root and
/dev/fuse): every lookup below it sleeps in the kernel until the filesystem is torn
down, as on a user's FUSE mount whose daemon stopped, or a hard NFS mount whose server
is gone. No FUSE daemon or library is needed: nobody ever reads ``/dev/fuse``, so the
kernel's first request (INIT) is never answered. Closing the descriptor aborts the
connection: the sleepers get ENOTCONN, and the mount is then detached.

Two kinds of never (Linux's fs/fuse/dev.c, ``request_wait_answer``):

- ``never_answering_fuse``: INIT is never answered, so a lookup waits for the
  connection to start, in ``D`` but *killably*: a SIGKILL ends it.
- ``unanswered_fuse``: INIT is answered and every later request is read, never
  answered. A request read by the daemon is waited for interruptibly (``S``) until a
  signal; after a SIGKILL the kernel waits for the answer uninterruptibly, so the
  process stays alive in ``D`` (wchan ``request_wait_answer``) until the connection is
  aborted: a worker SIGKILL cannot kill, as on a hung NFS server or GPU driver.

``worker_held_in_fuse`` is such a worker, asleep in its lookup.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.waiting import wait_until
from timer_core.engine.kernel_state import read_kernel_state

__all__ = ["never_answering_fuse", "unanswered_fuse", "worker_held_in_fuse"]

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2


# The kernel's FUSE protocol (include/uapi/linux/fuse.h): what the daemon reads and
# writes, and the one opcode answered.
_FUSE_INIT = 26
_IN_HEADER = struct.Struct("<IIQ")  # len, opcode, unique (the rest is not read)
_OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
_INIT_IN = struct.Struct("<III")  # major, minor, max_readahead (after the 40-byte header)
# fuse_init_out, protocol 7.31: major, minor, max_readahead, flags, max_background,
# congestion_threshold, max_write, time_gran, max_pages, map_alignment, flags2, and
# reserved words up to its 64 bytes.
_INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
_READ_BYTES = 1 << 18  # the kernel refuses reads into less than a whole request


@contextmanager
def _mounted(directory: Path, flags: int) -> Iterator[tuple[int, ctypes.CDLL]]:
    """``/dev/fuse`` opened with ``flags`` and mounted over ``directory``: its descriptor.
    Skips the test where it cannot; closing the descriptor aborts the connection."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse to mount a FUSE filesystem")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fuse = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC | flags)
    options = f"fd={fuse},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"timer-test", bytes(directory), b"fuse", _MS_NOSUID | _MS_NODEV, options):
        error = ctypes.get_errno()
        os.close(fuse)
        pytest.skip(f"cannot mount FUSE here: {os.strerror(error)}")
    try:
        yield fuse, libc
    finally:
        os.close(fuse)
        libc.umount2(bytes(directory), _MNT_DETACH)


@contextmanager
def never_answering_fuse(directory: Path) -> Iterator[None]:
    """Mount it over ``directory`` for the block; skips the test where it cannot."""
    with _mounted(directory, 0):
        yield


@contextmanager
def unanswered_fuse(directory: Path) -> Iterator[None]:
    """Mount over ``directory`` a filesystem that starts (answers INIT), then reads every
    request and answers none, until the block ends: a process that looks anything up
    below it and is then sent SIGKILL stays alive in ``D`` until then. Its daemon is a
    thread of this process; the worker must not inherit the descriptor (start it with
    ``subprocess``, which closes it), or the connection outlives the block."""
    with _mounted(directory, os.O_NONBLOCK) as (fuse, _):
        stop = threading.Event()
        daemon = threading.Thread(target=_read_and_never_answer, args=(fuse, stop), daemon=True)
        daemon.start()
        try:
            yield
        finally:
            # Stopped before the descriptor is closed: a thread blocked in a read would
            # hold the connection open, and its sleepers asleep, past the close.
            stop.set()
            daemon.join(5.0)


@contextmanager
def worker_held_in_fuse(workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker asleep in a lookup below an ``unanswered_fuse`` mounted on
    ``workdir``/mnt (interruptibly, until a signal). It is sent SIGKILL as the block
    ends, before the filesystem is torn down: it dies once the mount is gone, of the
    first fatal signal it was sent (the caller waits for that)."""
    mount = workdir / "mnt"
    mount.mkdir()
    with unanswered_fuse(mount):
        worker = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.stat({str(mount / 'x')!r})"]
        )
        try:
            asleep = wait_until(
                lambda: read_kernel_state(worker.pid).wchan == "request_wait_answer"
            )
            assert asleep, read_kernel_state(worker.pid)
            yield worker
        finally:
            worker.kill()


def _read_and_never_answer(fuse: int, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([fuse], [], [], 0.05)
        if not ready:
            continue
        try:
            request = os.read(fuse, _READ_BYTES)
        except BlockingIOError:
            continue
        except OSError:
            return  # the connection was aborted
        _, opcode, unique = _IN_HEADER.unpack_from(request)
        if opcode != _FUSE_INIT:
            continue  # read, so the kernel waits for its answer: never sent
        _, _, readahead = _INIT_IN.unpack_from(request, 40)
        reply = _INIT_OUT.pack(7, 31, readahead, 0, 16, 12, 1 << 17, 1, 32, 0, 0)
        os.write(fuse, _OUT_HEADER.pack(_OUT_HEADER.size + len(reply), 0, unique) + reply)
