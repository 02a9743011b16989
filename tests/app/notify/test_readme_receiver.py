"""The README's ten-line webhook receiver, run as it is printed there, accepts what the
service sends and refuses what it did not sign."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.notify.webhook import post_signed
from tests.app.service_process import free_port
from tests.waiting import wait_until

README = Path(__file__).parents[3] / "README.md"
SECRET = "a-secret-of-32-characters-------"


def readme_receiver() -> str:
    section = README.read_text().split("**Verify a webhook.**", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_example_is_ten_lines() -> None:
    lines = [line for line in readme_receiver().splitlines() if line.strip()]
    assert len(lines) == 10, lines


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver().replace("9000", str(port)))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, "WEBHOOK_SECRET": SECRET},
        stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        try:
            httpx.get(address, timeout=1)
            return True
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(up, timeout=10)
        yield address
    finally:
        process.kill()
        process.wait()


def test_the_example_checks_the_signature(url: str) -> None:
    body = b'{"kind":"incident"}'
    assert post_signed(url, SECRET, "d1", body).delivered
    refused = post_signed(url, "not-the-secret-of-the-receiver--", "d2", body)
    assert (refused.delivered, refused.error) == (False, "HTTP 401")
