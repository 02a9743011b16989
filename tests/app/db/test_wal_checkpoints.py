"""WAL checkpoints run beside the recorder, never inside one of its commits."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.db.recorder import Recorder
from app.db.wal_checkpoints import WalCheckpoints
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


def test_a_wal_past_its_bound_is_truncated_and_a_smaller_one_is_not(tmp_path: Path) -> None:
    """A PASSIVE checkpoint never shrinks the WAL, which a user's arm + release loop
    grew by hundreds of megabytes (issue 20); past its bound, a round truncates it."""
    database = tmp_path / "r.db"
    wal = Path(f"{database}-wal")
    engine = migrated_engine(database)
    recorder = Recorder(engine)
    for seq in range(1, 501):  # one commit each: many pages of WAL
        recorder(event(seq, "acquired", seq))
        recorder.flush()
    grown = wal.stat().st_size
    lenient = WalCheckpoints(engine, max_wal_bytes=grown + 1)
    lenient.checkpoint()
    assert (wal.stat().st_size, lenient.truncations) == (grown, 0)  # copied, kept
    strict = WalCheckpoints(engine, max_wal_bytes=grown - 1)
    assert strict.wal_bytes() == grown
    strict.checkpoint()
    assert (wal.stat().st_size, strict.truncations) == (0, 1)
    with engine.connect() as connection:  # and nothing was lost
        assert connection.execute(text("SELECT count(*) FROM timers")).scalar() == 500
    engine.dispose()
