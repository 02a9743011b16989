from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.workers import spawn_sleeper


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Spawn real sleeping children with ``spawned.append(spawn_sleeper())``;
    every one still alive is killed after the test."""
    spawned: list[subprocess.Popen[bytes]] = []
    yield spawned
    for process in spawned:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def sleeper(sleepers: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = spawn_sleeper()
    sleepers.append(process)
    return process
