"""The recorder waits out its retry pace only after a write that failed. A prune or a
size check that finds nothing buffered is no failure: had the writer slept then, every
write answered in that half second (a 201 waits for its commit) would have waited too,
once an hour for the prune, every ten seconds for the size check, and at each start."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from app.db import recorder as recorder_module
from app.db.recorder import Recorder
from tests.sample_events import event


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep of the recorder's writer, recorded instead of slept."""
    sleeps: list[float] = []
    clock = SimpleNamespace(monotonic=time.monotonic, time=time.time, sleep=sleeps.append)
    monkeypatch.setattr(recorder_module, "time", clock)
    return sleeps


def test_a_prune_with_nothing_buffered_is_not_followed_by_a_retry_wait(
    backend_engine: Engine, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(backend_engine, retention_seconds=86400)  # a prune is due at once
    cutoffs: list[float] = []
    prune = recorder.prune

    def counted_prune(cutoff: float) -> tuple[int, int]:
        cutoffs.append(cutoff)
        return prune(cutoff)

    monkeypatch.setattr(recorder, "prune", counted_prune)
    assert recorder._run_once()  # one turn of the writer's loop, on this thread
    assert len(cutoffs) == 1 and recorder.backlog() == 0
    assert slept == []


def test_a_failed_write_is_retried_at_the_retry_pace(
    backend_engine: Engine, slept: list[float]
) -> None:
    recorder = Recorder(backend_engine)
    with backend_engine.begin() as connection:
        connection.execute(text("DROP TABLE events"))
    recorder(event(1, "acquired", 1))
    assert recorder._run_once()
    assert recorder.last_error is not None and recorder.backlog() == 1
    assert slept == [recorder_module._RETRY_SECONDS]
