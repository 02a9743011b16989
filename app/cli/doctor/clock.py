"""Is the wall clock sane, steady, and kept in step?

The service's deadlines run on the monotonic clock, but what crosses processes and
hosts is wall-clock time: a FIFO request's ``expiration_time`` (unix seconds, from the
worker's clock), every recorded time, and a fleet's node heartbeats, which each node
judges by its own clock. So:

- the wall clock must be plausible: not before this installation's files were written,
  not absurdly far ahead;
- it must not be stepped while doctor watches it (the wall clock against the monotonic
  one over a short sample): something setting it now (a VM resumed, ntpdate in a loop)
  moves FIFO deadlines;
- the kernel should say it is synchronised (``adjtimex``: STA_UNSYNC clear; or
  systemd-timesyncd's ``/run/systemd/timesync/synchronized``).
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import app
from app.settings import Settings

from .results import Check, Result, Status

__all__ = ["CHECKS"]

# No build of this service predates this (2024-01-01 UTC); no sane clock reads after 2100.
_EARLIEST = 1704067200.0
_LATEST = 4102444800.0
_SAMPLE_SECONDS = 0.2
# The wall clock may gain or lose this much on the monotonic one during the sample:
# NTP slews at most 500 ppm (0.1 ms in 0.2 s); more is a step.
_MAX_STEP = 0.05
_TIMESYNCD = Path("/run/systemd/timesync/synchronized")
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
_SYNC_FIX = (
    "run an NTP client on every node (chrony or systemd-timesyncd: timedatectl "
    "set-ntp true); in a container, on its host"
)


class _Timex(ctypes.Structure):
    """struct timex (linux/timex.h) up to ``status``, then room for the rest."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),
    ]


def _built_at() -> float:
    """When this installation's files were written (its package directory)."""
    return os.stat(Path(app.__file__).parent).st_mtime


def check_wall_clock(settings: Settings) -> list[Result]:
    name = "wall clock"
    now = time.time()
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if not _EARLIEST <= now <= _LATEST:
        fix = "set the clock (timedatectl set-time, or let NTP set it) and check the RTC battery"
        return [Result(name, Status.FAIL, f"reads {shown}: not a plausible date", fix)]
    built = _built_at()
    if now < built - 60:
        found = f"reads {shown}, before this installation was written ({time.ctime(built)})"
        fix = "set the clock (timedatectl, or an NTP client) before starting the service"
        return [Result(name, Status.WARN, found, fix)]
    return [Result(name, Status.OK, f"reads {shown}")]


def _step(sample: float) -> float:
    """How far the wall clock moved against the monotonic one over ``sample`` seconds:
    the least of three tries, so a preemption between two reads is not taken for a step."""
    steps = []
    for _ in range(3):
        wall, mono = time.time(), time.monotonic()
        time.sleep(sample / 3)
        steps.append(abs((time.time() - wall) - (time.monotonic() - mono)))
    return min(steps)


def check_clock_steps(settings: Settings) -> list[Result]:
    name = "clock steps"
    step = _step(_SAMPLE_SECONDS)
    if step > _MAX_STEP:
        found = (
            f"the wall clock moved {step * 1000:.0f} ms against the monotonic one within "
            f"{_SAMPLE_SECONDS / 3:.2f} s: something is setting it right now"
        )
        fix = "let one NTP client slew the clock; stop anything that steps it (ntpdate in cron)"
        return [Result(name, Status.WARN, found, fix)]
    return [Result(name, Status.OK, f"steady against the monotonic clock ({step * 1e6:.0f} µs)")]


def check_time_sync(settings: Settings) -> list[Result]:
    name = "time sync"
    if _TIMESYNCD.exists():
        return [Result(name, Status.OK, "systemd-timesyncd says the clock is synchronised")]
    timex = _Timex()  # modes 0: only read
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError) as error:
        return [Result(name, Status.OK, f"unknown: adjtimex is not available ({error})")]
    if state < 0:
        why = os.strerror(ctypes.get_errno())
        return [Result(name, Status.OK, f"unknown: adjtimex failed ({why})")]
    if state == _TIME_ERROR or timex.status & _STA_UNSYNC:
        found = (
            "the kernel says the clock is not synchronised (adjtimex: STA_UNSYNC; "
            f"estimated error up to {timex.maxerror / 1000:.0f} ms)"
        )
        return [Result(name, Status.WARN, found, _SYNC_FIX)]
    found = f"synchronised (adjtimex; estimated error {timex.esterror / 1000:.1f} ms)"
    return [Result(name, Status.OK, found)]


CHECKS = [
    Check("wall clock", check_wall_clock, 2.0, "run 'date' by hand"),
    Check("clock steps", check_clock_steps, 5.0, "a loaded host: run doctor again"),
    Check("time sync", check_time_sync, 2.0, "run 'timedatectl' or 'chronyc tracking'"),
]
