"""Real ``torchrun`` jobs (the venv's torch, gloo on the CPU) whose ranks time their
steps with torch's own ``FileTimerClient`` on the real service's FIFO: the command,
its environment, a job started in the background and waited for, and the service's
answers read back."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess, free_port
from timer_core.diagnosis.stack_capture import StackCapturer

__all__ = [
    "TORCHRUN",
    "captures_stacks",
    "ended",
    "get",
    "job_command",
    "job_env",
    "kill_job",
    "needs_torchrun",
    "start_job",
]

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))

needs_torchrun = pytest.mark.skipif(
    TORCHRUN is None, reason="torchrun is not installed (pip install torch)"
)
# What the service needs to take the stacks of a hung job's ranks.
captures_stacks = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: py-spy attaches with ptrace"),
    pytest.mark.skipif(
        StackCapturer().py_spy is None, reason="py-spy is not installed (pip install py-spy)"
    ),
]


def job_command(workdir: Path, worker: str, job_id: str, ranks: int, *args: str) -> list[str]:
    """torchrun's command for ``ranks`` ranks on this machine running ``worker`` (the
    script's text, written to ``workdir``/train.py) with ``args``; a rendezvous of its
    own on a free port."""
    script = workdir / "train.py"
    script.write_text(worker)
    assert TORCHRUN is not None
    return [
        TORCHRUN,
        f"--nproc-per-node={ranks}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        f"--rdzv-id={job_id}",
        str(script),
        *args,
    ]


def job_env(fifo: Path) -> dict[str, str]:
    """The ranks' environment: the service's FIFO in ``TIMER_FIFO``, and one thread
    each (ranks on a 2-core machine would slow each other)."""
    return {**os.environ, "TIMER_FIFO": str(fifo), "OMP_NUM_THREADS": "1"}


def start_job(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """torchrun in the background, in a session of its own, its output in ``log``."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def kill_job(job: subprocess.Popen[bytes]) -> None:
    """Kills torchrun and its ranks, if it still runs. torchrun starts each rank in a
    session of its own: its ranks are killed by pid (its children, not reaped while it
    lives), then its own group."""
    if job.poll() is None:
        ranks = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True)
        for pid in ranks.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()


def ended(job: subprocess.Popen[bytes], log: Path, seconds: float) -> str:
    """torchrun's output, once the service's kills have ended it (a failure, its
    ranks killed): the test fails if it runs on past ``seconds``."""
    try:
        job.wait(seconds)
    except subprocess.TimeoutExpired:
        kill_job(job)
        pytest.fail(f"torchrun never ended:\n{log.read_text(errors='replace')}")
    output = log.read_text(errors="replace")
    assert job.returncode != 0, output
    return output


def get(service: ServiceProcess, path: str, **params: str | int) -> Any:
    """The service's JSON answer to ``GET path``, which must be 200."""
    answer = httpx.get(service.url + path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()
