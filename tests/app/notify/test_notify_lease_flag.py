"""--notify-lease (contract 11): how long a node holds a notification it is sending.
A value that cannot work stops the real service at its start, naming the flag; the
environment's variable sets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from tests.app.service_process import refused_start


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_lease_that_cannot_work_stops_the_service(tmp_path: Path, value: str) -> None:
    refused = refused_start(tmp_path, f"--notify-lease={value}")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("--notify-lease"), refused.stderr
    assert not (tmp_path / "service.db").exists()


def test_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().notify_lease == 60.0
    monkeypatch.setenv("TIMER_SERVICE_NOTIFY_LEASE", "2.5")
    assert Settings.from_env().notify_lease == 2.5
    assert Settings.from_env(notify_lease=7.0).notify_lease == 7.0
