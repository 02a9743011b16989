"""The terminal client run as users run it: ``python -m app.cli ...`` in a process of
its own, with none of the caller's ``TIMER_SERVICE_*`` settings unless a test gives
them, and no terminal (a pipe) unless a test asks for one."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["cli", "cli_env", "cli_in_terminal", "cli_many", "cli_popen"]

# The checkout this file is in: the client runs from it wherever the tests run.
ROOT = Path(__file__).resolve().parents[3]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TIMER_SERVICE_") and name not in ("COLUMNS", "NO_COLOR")
    }
    return {**env, "PYTHONPATH": str(ROOT), **(extra or {})}


def _command(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "app.cli", *argv]


def cli(
    *argv: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(argv),
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=ROOT,
        timeout=timeout,
    )


def cli_many(
    runs: Mapping[str, Sequence[str]],
    env: Mapping[str, str] | None = None,
    envs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each of ``runs`` (a name and its arguments), a few side by side. ``envs`` adds to
    ``env`` by name."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(cli, *argv, env={**(env or {}), **(envs or {}).get(name, {})})
            for name, argv in runs.items()
        }
        return {name: future.result() for name, future in futures.items()}


def cli_popen(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """The client running on, its output read line by line as it comes."""
    return subprocess.Popen(
        _command(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=cli_env(env),
        cwd=ROOT,
    )


def cli_in_terminal(
    *argv: str, columns: int, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """The client with a real terminal (a pseudo-terminal ``columns`` wide) as its
    stdout: its exit status and what it wrote there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    with subprocess.Popen(
        _command(argv),
        stdout=follower,
        stderr=subprocess.PIPE,
        env=cli_env({"TERM": "xterm-256color", **(env or {})}),
        cwd=ROOT,
    ) as process:
        os.close(follower)
        output = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the client closed its end
                break
            if not chunk:
                break
            output += chunk
        status = process.wait(120)
    os.close(leader)
    return status, output.decode(errors="replace").replace("\r\n", "\n")
