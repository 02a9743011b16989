"""WAL checkpoints run beside the recorder, never inside one of its commits."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.recorder import Recorder
from app.wal_checkpoints import WalCheckpoints
from tests.conftest import migrated_engine
from tests.sample_events import event
from tests.waiting import wait_until


def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    database = tmp_path / "r.db"
    engine = migrated_engine(database)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
    recorder = Recorder(engine)
    recorder.checkpoints = WalCheckpoints(engine, interval=0.05)
    size_before = database.stat().st_size
    for seq in range(1, 2001):
        recorder(event(seq, "acquired", seq))
    recorder.flush()  # on this thread, as the writer would: the rows go to the WAL only
    assert database.stat().st_size == size_before
    recorder.start()
    try:
        # The checkpoint thread copies them into the database file, unasked.
        assert wait_until(lambda: database.stat().st_size > size_before)
    finally:
        recorder.stop()
