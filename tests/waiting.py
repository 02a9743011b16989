"""Waiting for real things (processes, threads, the recorder) without fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes; returns whether it came true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())
