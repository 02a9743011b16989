"""The real service keeps the FIFOs it serves (``--fifo`` and ``--fifo-dir/<uid>``): one
deleted, or replaced by a regular file, a symbolic link or another FIFO (what torch's
agent does with ``TORCHELASTIC_ENABLE_FILE_TIMER=1``), is made again within a few
seconds, with one WARNING saying why, and torch's own ``FileTimerClient`` arms through it
again and has its worker killed on time. What the service may not remove (a directory
on the path) leaves ``/healthz`` degraded, naming the FIFO and what to do, until it goes.

Needs root (the per-uid FIFO of uid 0 is made as root) and torch."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess, wait_for_state
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes uid 0's per-user FIFO"),
]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    pytest.importorskip("torch.distributed.elastic.timer")
    workdir = tmp_path_factory.mktemp("guarded")
    running = ServiceProcess(
        workdir,
        "--fifo",
        str(workdir / "timers.fifo"),
        "--fifo-dir",
        str(workdir / "fifos"),
        "--fifo-users",
        "0",
    ).start()
    yield running
    running.stop()


def fifo_paths(service: ServiceProcess) -> dict[str, Path]:
    return {"--fifo": service.workdir / "timers.fifo", "--fifo-dir": service.workdir / "fifos/0"}


def health(service: ServiceProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(service.url + "/healthz").json()
    return body


def is_served(path: Path, old_inode: int = -1) -> bool:
    """A FIFO is at ``path`` again, not the one that was there before (``old_inode``)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISFIFO(found.st_mode) and found.st_ino != old_inode


# torch's own FileTimerClient, imported once for the module (torch takes seconds to
# import on a busy machine): for each "PATH PID" line it writes torch's request for PID
# through the FIFO at PATH, exactly as torch's client writes a worker's own.
TORCH_CLIENT = """
import sys, time
from torch.distributed.elastic.timer import FileTimerClient, FileTimerRequest
for line in sys.stdin:
    path, pid = line.split()
    request = FileTimerRequest(int(pid), "guarded", time.time() + 0.5, 9)
    try:
        FileTimerClient(path)._send_request(request)
        print("sent", flush=True)
    except Exception as error:
        print(repr(error), flush=True)
"""


@pytest.fixture(scope="module")
def torch_client() -> Iterator[subprocess.Popen[str]]:
    pytest.importorskip("torch.distributed.elastic.timer")
    process = subprocess.Popen(
        [sys.executable, "-c", TORCH_CLIENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield process
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(30)
    process.stdout.close()


def assert_killed_through(
    service: ServiceProcess, torch_client: subprocess.Popen[str], path: Path
) -> None:
    """torch's client arms a 0.5 s timer through ``path`` for a hanging worker: killed."""
    assert torch_client.stdin is not None and torch_client.stdout is not None
    stuck = spawn_sleeper()
    torch_client.stdin.write(f"{path} {stuck.pid}\n")
    torch_client.stdin.flush()
    assert torch_client.stdout.readline().strip() == "sent"
    assert_sigkilled(stuck, 30)
    assert wait_for_state(service.url, stuck.pid, "killed")["source"] == "fifo"


def _replace_with(path: Path, make: Callable[[Path], object]) -> None:
    """Put something else at ``path`` in one rename, as a program replacing it would."""
    planted = path.with_name(path.name + ".planted")
    make(planted)
    os.replace(planted, path)


BREAKS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "deleted": (lambda path, _: os.unlink(path), "was deleted"),
    "regular file": (
        lambda path, _: _replace_with(path, lambda p: p.write_text("planted")),
        "was replaced by a regular file",
    ),
    "symlink to a root-only file": (
        lambda path, secret: _replace_with(path, lambda p: p.symlink_to(secret)),
        "was replaced by a symbolic link",
    ),
}


@pytest.mark.parametrize("which", ["--fifo", "--fifo-dir"])
@pytest.mark.parametrize("how", list(BREAKS))
def test_a_deleted_or_replaced_fifo_is_made_again_and_kills_on_time(
    service: ServiceProcess,
    torch_client: subprocess.Popen[str],
    tmp_path: Path,
    which: str,
    how: str,
) -> None:
    path = fifo_paths(service)[which]
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    old_inode = os.lstat(path).st_ino
    restored_before = health(service)["fifo_restorations"]
    log_before = service.log()
    breaks, reason = BREAKS[how]

    breaks(path, secret)

    assert wait_until(lambda: is_served(path, old_inode), timeout=15), service.log()
    found = os.lstat(path)
    assert (stat.S_IMODE(found.st_mode), found.st_uid) == (0o600, 0)
    # The planted link was removed, never followed: the file it named is untouched.
    assert secret.read_text() == "root only" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert wait_until(lambda: health(service)["fifo_restorations"] == restored_before + 1)
    body = health(service)
    assert body["status"] == "ok", body
    said = service.log()[len(log_before) :]
    assert said.count(f"the FIFO {path} {reason}") == 1, said
    assert "WARNING" in said.split(f"the FIFO {path} {reason}")[0].splitlines()[-1]
    assert_killed_through(service, torch_client, path)


@pytest.mark.parametrize("which", ["--fifo", "--fifo-dir"])
def test_a_directory_on_the_fifos_path_degrades_health_until_it_is_removed(
    service: ServiceProcess, torch_client: subprocess.Popen[str], which: str
) -> None:
    path = fifo_paths(service)[which]
    old_inode = os.lstat(path).st_ino
    os.unlink(path)
    path.mkdir()
    (path / "keep").write_text("not the service's to delete")

    def degraded() -> bool:
        body = health(service)
        return body["status"] == "degraded" and any(str(path) in p for p in body["problems"])

    assert wait_until(degraded, timeout=15), health(service)
    assert (path / "keep").exists()  # never deleted
    [problem] = [p for p in health(service)["problems"] if str(path) in p]
    assert "remove" in problem, problem

    shutil.rmtree(path)
    assert wait_until(lambda: health(service)["status"] == "ok", timeout=15), health(service)
    assert is_served(path, old_inode)
    assert_killed_through(service, torch_client, path)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed (pip install torch)")
def test_torchs_agent_with_its_file_timer_on_the_fifo_does_not_leave_it_deleted(
    service: ServiceProcess, torch_client: subprocess.Popen[str], tmp_path: Path
) -> None:
    """The real thing: torchrun with TORCHELASTIC_ENABLE_FILE_TIMER=1 runs torch's own
    FileTimerServer on the service's FIFO, which makes a FIFO of its own there at start
    and deletes the path when the job ends."""
    assert TORCHRUN is not None
    path = fifo_paths(service)["--fifo"]
    restored_before = health(service)["fifo_restorations"]
    log_before = service.log()
    # The job's worker uses torch's client as torch documents it, through the path the
    # agent hands it: it arms and releases one timer.
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
            import os, time
            from torch.distributed.elastic import timer
            timer.configure(timer.FileTimerClient(os.environ["TORCHELASTIC_TIMER_FILE"]))
            with timer.expires(after=0.5):
                pass
            print("released")
        """)
    )
    env = {
        **os.environ,
        "TORCHELASTIC_ENABLE_FILE_TIMER": "1",
        "TORCHELASTIC_TIMER_FILE": str(path),
    }
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc-per-node", "1", str(script)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    # torch's agent deleted the path on its way out: the service made it again.
    assert wait_until(lambda: is_served(path), timeout=15), service.log()
    assert wait_until(lambda: health(service)["fifo_restorations"] > restored_before)
    said = service.log()[len(log_before) :]
    assert f"the FIFO {path} was deleted: made it again" in said, said
    assert health(service)["status"] == "ok"
    assert_killed_through(service, torch_client, path)
