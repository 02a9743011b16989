"""The learned-timeout and straggler flags (contract 12): a value that cannot work
stops the real service at its start, with a line saying which flag and why, before it
arms anything; the environment's variables are read as the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from tests.app.service_process import refused_start


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--auto-floor", "nan"),
        ("--auto-floor", "-1"),
        ("--auto-initial-timeout", "0"),
        ("--auto-initial-timeout", "inf"),
        ("--auto-min-samples", "0"),
        ("--straggler-ratio", "1"),
        ("--straggler-ratio", "nan"),
        ("--straggler-window", "0"),
        ("--straggler-max-series", "-1"),
    ],
)
def test_a_value_that_cannot_work_stops_the_service(tmp_path: Path, flag: str, value: str) -> None:
    refused = refused_start(tmp_path, f"{flag}={value}")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith(flag), refused.stderr
    assert not (tmp_path / "service.db").exists()


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AUTO_FLOOR": "2.5",
        "AUTO_INITIAL_TIMEOUT": "90",
        "AUTO_MIN_SAMPLES": "7",
        "STRAGGLER_RATIO": "1.5",
        "STRAGGLER_WINDOW": "30",
        "STRAGGLER_MAX_SERIES": "9",
    }.items():
        monkeypatch.setenv(f"TIMER_SERVICE_{name}", value)
    settings = Settings.from_env()
    assert (settings.auto_floor, settings.auto_initial_timeout, settings.auto_min_samples) == (
        2.5,
        90.0,
        7,
    )
    assert (
        settings.straggler_ratio,
        settings.straggler_window,
        settings.straggler_max_series,
    ) == (1.5, 30, 9)
