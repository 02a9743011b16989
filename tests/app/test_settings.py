from __future__ import annotations

import pytest

from app.settings import Settings


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMER_SERVICE_PORT", "9001")
    monkeypatch.setenv("TIMER_SERVICE_FIFO_MODE", "640")
    monkeypatch.setenv("TIMER_SERVICE_CAPTURE_STACKS", "false")
    settings = Settings.from_env(port=None, host="::1")
    assert (settings.port, settings.fifo_mode, settings.host) == (9001, 0o640, "::1")
    assert settings.capture_stacks is False
    assert Settings.from_env(port=9002).port == 9002


def test_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1" and settings.fifo_mode == 0o600 and settings.token is None
    assert settings.db_url == "sqlite:///./timer-service.db"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("PORT", "eighty", "not a valid int"),
        ("FIFO_MODE", "rw-------", "octal mode"),
        ("SIGNAL_CHILDREN", "maybe", "not a boolean"),
        ("UNKILLABLE_AFTER", "soon", "not a valid float"),
        ("UNKILLABLE_AFTER", "-1", "not a number of seconds >= 0"),
        ("UNKILLABLE_AFTER", "nan", "not a number of seconds >= 0"),
    ],
)
def test_bad_environment_values_say_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(f"TIMER_SERVICE_{name}", value)
    with pytest.raises(SystemExit, match=says):
        Settings.from_env()
