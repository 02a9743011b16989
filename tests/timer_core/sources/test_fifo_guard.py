"""The FIFO guard clears the FIFO's path only where that is safe, and says what to do
where it cannot, without failing its round."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from timer_core.sources.fifo_guard import blocker_of


@pytest.fixture
def mounted_over(tmp_path: Path) -> Iterator[Path]:
    """A file at the FIFO's path that cannot be unlinked: a bind mount (EBUSY), as an
    entry swapped between the guard's stat and its unlink would refuse."""
    if os.geteuid() != 0:
        pytest.skip("needs root: bind-mounts a file")
    planted = tmp_path / "timers.fifo"
    planted.write_text("planted")
    source = tmp_path / "source"
    source.write_text("source")
    subprocess.run(["mount", "--bind", str(source), str(planted)], check=True)
    try:
        yield planted
    finally:
        subprocess.run(["umount", str(planted)], check=True)


def test_a_planted_file_in_our_directory_is_removed(tmp_path: Path) -> None:
    planted = tmp_path / "timers.fifo"
    planted.write_text("planted")
    assert blocker_of(str(planted)) is None
    assert not planted.exists()


def test_an_entry_that_cannot_be_removed_is_reported_not_raised(mounted_over: Path) -> None:
    why = blocker_of(str(mounted_over))
    assert why is not None and "cannot be removed" in why and "by hand" in why
    assert mounted_over.read_text() == "source"  # nothing was removed
