"""The service's URL as another user reaches it: through second_user_forwarder.py, run
as that user, so the service sees that user's socket, as it would see that user's own
browser (real Chromium cannot be run as another user by the test itself)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.app.service_process import free_port
from tests.second_user import SYSTEM_PYTHON, as_user, ensure_user, readable_copy

__all__ = ["url_as_other_user"]

FORWARDER = Path(__file__).with_name("second_user_forwarder.py")


@contextmanager
def url_as_other_user(service_port: int, user: str = "ts-viewer") -> Iterator[str]:
    """``http://127.0.0.1:PORT`` forwarded to ``service_port`` by ``user`` while open."""
    port = free_port()
    script = str(readable_copy(FORWARDER))  # the second user may not reach the checkout
    forwarder = subprocess.Popen(
        as_user(*ensure_user(user), [SYSTEM_PYTHON, script, str(port), str(service_port)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        forwarder.kill()
        forwarder.wait()
        if forwarder.stdout is not None:
            forwarder.stdout.close()
