from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_systemd_unit_restarts_on_failure_and_runs_the_service() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "timer-service.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"].endswith("timer-service serve")
    assert "multi-user.target" in unit["Install"]["WantedBy"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("timer-service") is None,
    reason="needs systemd-analyze and an installed timer-service",
)
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / "timer-service.service").read_text()
    installed = str(Path(shutil.which("timer-service") or "").resolve())
    unit = tmp_path / "timer-service.service"
    unit.write_text(text.replace("/usr/local/bin/timer-service", installed))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
