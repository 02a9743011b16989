"""``timer-service doctor`` on the bad hosts only root can build: a full disk and a
read-only one under the database (tmpfs mounts in a private mount namespace, gone with
it), and ptrace taken away (CAP_SYS_PTRACE dropped from the bounding set, as a
container or a systemd unit does). Each fails, naming the fix."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.cli.doctor_command import DoctorRun, doctor_command

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts a tmpfs, drops capabilities"),
    pytest.mark.skipif(
        not (shutil.which("unshare") and shutil.which("setpriv")), reason="needs util-linux"
    ),
]


def _on_a_tmpfs(mount: Path, options: str, then: str, *flags: str) -> DoctorRun:
    """doctor in a mount namespace of its own where ``mount`` is a small tmpfs (after
    ``then`` ran in it): nobody else sees the mount, and it goes with the namespace."""
    script = (
        f"mount -t tmpfs -o {options} timer-doctor {shlex.quote(str(mount))} && {then}"
        f"exec {shlex.join(doctor_command(*flags, '--json'))}"
    )
    return DoctorRun(prefix=["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DoctorRun]]:
    base = tmp_path_factory.mktemp("doctor-root")
    base.chmod(0o700)
    runs: dict[str, DoctorRun] = {}
    try:
        full = base / "full"
        full.mkdir(mode=0o700)
        # Filled to the last block; dd says "No space left on device", as it should.
        fill = f"dd if=/dev/zero of={shlex.quote(str(full / 'filler'))} bs=64k 2>/dev/null; "
        runs["full disk"] = _on_a_tmpfs(
            full,
            "size=4m,mode=0700",
            fill,
            "--no-capture-stacks",
            "--db-url",
            f"sqlite:///{full / 'timer-service.db'}",
        )
        read_only = base / "read-only"
        read_only.mkdir(mode=0o700)
        runs["read-only"] = _on_a_tmpfs(
            read_only,
            "size=1m,mode=0700,ro",
            "",
            "--no-capture-stacks",
            "--db-url",
            f"sqlite:///{read_only / 'timer-service.db'}",
        )
        runs["no ptrace"] = DoctorRun(
            "--db-url",
            f"sqlite:///{base / 'x.db'}",
            prefix=["setpriv", "--inh-caps=-all", "--bounding-set=-sys_ptrace"],
        )
        yield runs
    finally:
        for run in runs.values():
            run.kill()


def test_a_full_disk_under_the_database_fails(hosts: dict[str, DoctorRun]) -> None:
    result = hosts["full disk"].finish().only_failure("disk space")
    assert result["found"].startswith("only ") and " free on the filesystem of " in result["found"]
    assert "free space on that filesystem" in result["fix"] and "--db-url" in result["fix"]


def test_a_read_only_database_directory_fails(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["read-only"].finish()
    assert doctored.returncode == 1, doctored.stdout + doctored.stderr
    assert "database" in doctored.failed()
    result = doctored.result("database")
    assert "cannot write in " in result["found"] and "Read-only file system" in result["found"]
    assert "point --db-url at a directory on a local, writable disk" in result["fix"]


def test_ptrace_taken_away_fails(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["no ptrace"].finish()
    assert doctored.returncode == 1, doctored.stdout + doctored.stderr
    assert set(doctored.failed()) == {"capabilities", "py-spy, other users"}
    capabilities = doctored.result("capabilities")
    assert "root without CAP_SYS_PTRACE" in capabilities["found"]
    assert "CapabilityBoundingSet=" in capabilities["fix"]
    # The service's own way of running py-spy for another user's worker, tried for real.
    other = doctored.result("py-spy, other users")
    assert "could not read a test worker of nobody" in other["found"]
    assert "CAP_SYS_PTRACE" in other["fix"]


def test_the_mounts_stayed_in_their_namespace(hosts: dict[str, DoctorRun]) -> None:
    for run in hosts.values():
        run.finish()
    with open("/proc/self/mountinfo") as mounts:
        assert "timer-doctor" not in mounts.read()
