"""The project as a user installs it: a built wheel in a fresh venv serves every page.

A checkout hides missing package data (templates, static files, migrations), because
the files sit beside the code anyway. This builds the wheel, installs it into a venv of
its own, and runs ``timer-service serve`` from an unrelated working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import free_port
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "test.lock"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outdir = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = outdir.glob("timer_service-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (nothing from this one) with the wheel and its dependencies. This
    test's own pip installs them there (``--python``): a pip in it (ensurepip) would
    cost the run 5 s and install nothing the service needs."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    into = ("--python", str(venv / "bin/python"))
    subprocess.run(
        [sys.executable, "-m", "pip", *into, "install", "-q", "-c", str(LOCK), str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv


@pytest.fixture(scope="module")
def served(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("anywhere")
    port = free_port()
    log = workdir / "service.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(installed / "bin/timer-service"), "serve", "--port", str(port)],
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # Nothing from the checkout may leak in through the environment.
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(healthy, timeout=60), log.read_text()
        yield url, workdir
    finally:
        process.terminate()
        process.wait(15)


def test_the_wheel_carries_templates_static_files_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "app/web/templates/dashboard.html",
        "app/web/templates/timer.html",
        "app/web/static/dashboard.js",
        "app/web/static/style.css",
        "app/db/migrations/env.py",
        "app/db/migrations/script.py.mako",
        "app/db/migrations/versions/0001_timers_and_events.py",
    ):
        assert needed in names, f"{needed} is missing from {wheel.name}"
    assert not any(name.startswith("tests/") for name in names)


def test_the_installed_service_does_not_import_from_the_checkout(installed: Path) -> None:
    found = subprocess.run(
        [str(installed / "bin/python"), "-c", "import app, timer_core; print(app.__file__)"],
        cwd="/",
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "site-packages" in found and str(REPO) not in found, found


def test_the_installed_service_serves_the_dashboard_and_its_assets(
    served: tuple[str, Path],
) -> None:
    url, _ = served
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "<html" in page.text
    for asset in ("/static/style.css", "/static/common.js", "/static/dashboard.js"):
        assert httpx.get(url + asset).status_code == 200, asset
    assert httpx.get(url + "/docs").status_code == 200


def test_the_installed_service_migrates_its_database_in_the_working_directory_and_kills(
    served: tuple[str, Path],
) -> None:
    url, workdir = served
    assert (workdir / "timer-service.db").exists()
    worker = spawn_sleeper()
    created = httpx.post(
        url + "/timers", json={"pid": worker.pid, "scope_id": "wheel", "expires_in": 0.3}
    )
    assert created.status_code == 201, created.text
    assert_sigkilled(worker)
