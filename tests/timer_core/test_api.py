from __future__ import annotations

import sys
import time

import pytest

import timer_core as timer
from timer_core import api


class RecordingClient(timer.TimerClient):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self.calls.append(("acquire", scope_id, expiration_time))

    def release(self, scope_id: str) -> None:
        self.calls.append(("release", scope_id, None))


def test_expires_without_a_configured_client_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_timer_client", None)
    with pytest.raises(RuntimeError, match="Configure timer client"), timer.expires(after=1):
        pass


def test_expires_uses_the_configured_client_and_the_callers_file_and_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "_timer_client", None)
    client = RecordingClient()
    timer.configure(client)
    before = time.time()
    with timer.expires(after=30):
        line = sys._getframe().f_lineno - 1
    scope = f"{__file__}#{line}"
    assert [c[:2] for c in client.calls] == [("acquire", scope), ("release", scope)]
    expiration = client.calls[0][2]
    assert expiration is not None and before + 30 <= expiration <= time.time() + 30


def test_explicit_client_and_scope_win_and_release_happens_on_error() -> None:
    client = RecordingClient()
    with pytest.raises(ValueError), timer.expires(after=1, scope="mine", client=client):
        raise ValueError("work failed")
    assert [c[:2] for c in client.calls] == [("acquire", "mine"), ("release", "mine")]


def test_timer_request_equality_follows_torch() -> None:
    assert timer.TimerRequest(1, "s", 2.0) == timer.TimerRequest(1, "s", 2.0)
    assert timer.FileTimerRequest(1, "s", 2.0, 9) != timer.FileTimerRequest(1, "s", 2.0, 15)
    assert timer.FileTimerRequest(1, "s", 2.0, 9).to_json() == (
        '{"version": 1, "pid": 1, "scope_id": "s", "expiration_time": 2.0, "signal": 9}'
    )
