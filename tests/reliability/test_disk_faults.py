"""The database becomes unwritable: locked by another connection, or the disk is
full (a tiny tmpfs made here), or read-only. Kills go on, /healthz and a metric say
why, events wait in a buffer and are written once the disk recovers, and a write that
cannot be committed is answered 202 (applied, ``recorded: false``) at once, never a fake
201 nor a 503 for what was done (contract 14). Once the buffer is full, new
acquisitions get 503 before they are armed: nothing is dropped."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process, service_of, worker_node_of
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")


def fault_settings(db_path: Path) -> Settings:
    return Settings(
        db_url=f"sqlite:///{db_path}",
        db_busy_timeout=0.2,
        commit_timeout=1.0,
        recorder_buffer=1000,
    )


def metric(client: TestClient, name: str) -> float | None:
    return service_of(client).metrics.registry.get_sample_value(name)


def check_fault_then_recovery(
    client: TestClient,
    sleepers: list[subprocess.Popen[bytes]],
    fault: str,
    recover: Callable[[], object],
) -> None:
    victim, bystander = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([victim, bystander])
    # Nothing can be committed: no fake 201, but the timer is armed and kills on time.
    response = client.post("/timers", json={"pid": victim.pid, "scope_id": "v", "expires_in": 0.3})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["recorded"] is False and accepted["timer"]["state"] == "active"
    assert fault in accepted["detail"] and "the timer is armed" in accepted["detail"]
    assert response.headers["retry-after"]
    assert wait_dead(victim) == -9
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert any(fault in problem for problem in health.json()["problems"])
    assert metric(client, "timer_recorder_degraded") == 1
    assert (metric(client, "timer_recorder_write_errors_total") or 0) >= 1
    assert client.get("/healthz").json()["recorder"]["backlog"] >= 2
    recover()
    assert wait_until(lambda: client.get("/healthz").json()["status"] == "ok")
    timers = client.get("/timers", params={"pid": victim.pid}).json()["items"]
    assert [t["state"] for t in timers] == ["killed"]
    response = client.post(
        "/timers", json={"pid": bystander.pid, "scope_id": "b", "expires_in": 60}
    )
    assert response.status_code == 201
    assert metric(client, "timer_recorder_degraded") == 0


def test_database_locked_by_another_connection(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    db = tmp_path / "locked.db"
    with in_process(create_app(fault_settings(db))) as client:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            check_fault_then_recovery(
                client, sleepers, "database is locked", lambda: holder.execute("COMMIT")
            )
        finally:
            holder.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: nothing left to flush
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


@needs_root
def test_disk_full(tiny_disk: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    with in_process(create_app(fault_settings(tiny_disk / "full.db"))) as client:
        filler = fill(tiny_disk)
        check_fault_then_recovery(client, sleepers, "full", filler.unlink)


def test_a_full_buffer_refuses_new_acquisitions_instead_of_dropping(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    db = tmp_path / "small-buffer.db"
    settings = replace(fault_settings(db), recorder_buffer=3, commit_timeout=0.3)
    worker = spawn_sleeper()
    sleepers.append(worker)
    with in_process(create_app(settings)) as client:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            answers = []
            for scope in ("a", "b", "c", "d", "e"):
                body = {"pid": worker.pid, "scope_id": scope, "expires_in": 600}
                answers.append(client.post("/timers", json=body))
            # Armed but not committable: 202 saying the timer is armed, not recorded yet.
            assert [r.status_code for r in answers[:3]] == [202, 202, 202]
            assert all("the timer is armed" in r.json()["detail"] for r in answers[:3])
            # Three events behind: the next ones are refused before the engine.
            assert [r.status_code for r in answers[3:]] == [503, 503]
            assert all("nothing was armed" in r.json()["detail"] for r in answers[3:])
            assert answers[3].headers["retry-after"] == "1"
            report = client.get("/healthz").json()
            assert report["recorder"]["behind"] == 3 and report["recorder"]["pauses"] >= 1
            assert metric(client, "timer_recorder_dropped_total") == 0
            # Releases are still taken: they end timers that exist.
            release = {"pid": worker.pid, "scope_id": "a"}
            released = client.post("/timers/release", json=release)
            assert released.status_code == 202
            assert "the timer is released" in released.json()["detail"]
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert wait_until(lambda: client.get("/healthz").json()["recorder"]["backlog"] == 0)
        # Everything the engine took is in the database, and nothing else is.
        stored = {t["scope_id"]: t["state"] for t in client.get("/timers").json()["items"]}
        assert stored == {"a": "released", "b": "active", "c": "active"}
        assert worker_node_of(client).reaper.active_count() == 2
        body = {"pid": worker.pid, "scope_id": "d", "expires_in": 600}
        assert client.post("/timers", json=body).status_code == 201


@needs_root
def test_a_read_only_disk_at_start_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,ro,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--port",
                "0",
                "--db-url",
                f"sqlite:///{mount / 'x.db'}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert result.returncode != 0
    assert "cannot open or write the database" in result.stderr
    assert "writable" in result.stderr
