"""The per-user FIFO directory: what it makes, and what it does with what it finds."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from timer_core.sources.fifo_dir import DIR_MODE, FifoDirectory, FifoDirError, resolve_uids

ME = os.geteuid()
# A uid with no passwd entry: as root, a FIFO can still be handed to it.
OTHER = 54321
needs_root = pytest.mark.skipif(ME != 0, reason="handing a FIFO to another uid needs root")


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[FifoDirectory]:
    made = FifoDirectory(str(tmp_path / "fifos"))
    yield made
    made.close()


def no_reader(path: Path) -> bool:
    """Whether nobody has the FIFO at ``path`` open for reading."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        return error.errno == errno.ENXIO
    os.close(fd)
    return False


def test_the_directory_is_made_for_the_service_alone_to_write(directory: FifoDirectory) -> None:
    found = os.stat(directory.path)
    assert stat.S_IMODE(found.st_mode) == DIR_MODE == 0o755
    assert found.st_uid == ME


def test_a_directory_others_could_write_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    FifoDirectory(str(loose)).close()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o755


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(FifoDirError, match="symbolic link"):
        FifoDirectory(str(tmp_path / "link"))


@needs_root
def test_a_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    with pytest.raises(FifoDirError, match=f"belongs to uid {OTHER}"):
        FifoDirectory(str(theirs))


def test_a_fifo_is_made_private_and_kept_open(directory: FifoDirectory) -> None:
    fifo, made = directory.open(ME)
    try:
        found = os.lstat(fifo.path)
        assert made and fifo.path == directory.fifo_path(ME)
        assert stat.S_ISFIFO(found.st_mode) and stat.S_IMODE(found.st_mode) == 0o600
        assert found.st_uid == ME
        assert not no_reader(Path(fifo.path))
        assert directory.is_current(fifo)
    finally:
        fifo.close()


def test_a_good_fifo_left_by_an_earlier_run_is_taken_over(directory: FifoDirectory) -> None:
    first, _ = directory.open(ME)
    first.close()
    again, made = directory.open(ME)
    again.close()
    assert not made and (again.device, again.inode) == (first.device, first.inode)
    assert directory.uids() == [ME]


@needs_root
def test_the_fifo_belongs_to_its_uid(directory: FifoDirectory) -> None:
    fifo, made = directory.open(OTHER)
    fifo.close()
    found = os.lstat(fifo.path)
    assert made and found.st_uid == OTHER and stat.S_IMODE(found.st_mode) == 0o600


def test_a_symlink_in_place_of_the_fifo_is_replaced_not_followed(
    directory: FifoDirectory, tmp_path: Path
) -> None:
    # A FIFO elsewhere: opened for reading through the link, it would be read by the
    # service (and, opened blocking, would hang it).
    elsewhere = tmp_path / "elsewhere.fifo"
    os.mkfifo(elsewhere, 0o600)
    os.symlink(elsewhere, directory.fifo_path(ME))
    fifo, made = directory.open(ME)
    fifo.close()
    assert made and stat.S_ISFIFO(os.lstat(fifo.path).st_mode)
    assert (fifo.device, fifo.inode) != (elsewhere.stat().st_dev, elsewhere.stat().st_ino)
    assert no_reader(elsewhere)


def test_a_regular_file_in_place_of_the_fifo_is_replaced_unread(
    directory: FifoDirectory, tmp_path: Path
) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    os.link(target, directory.fifo_path(ME))
    fifo, made = directory.open(ME)
    fifo.close()
    assert made and stat.S_ISFIFO(os.lstat(fifo.path).st_mode)
    assert target.read_text() == "keep me"


@needs_root
def test_a_fifo_of_another_owner_or_mode_is_replaced(directory: FifoDirectory) -> None:
    path = directory.fifo_path(OTHER)
    os.mkfifo(path, 0o600)  # root's, not OTHER's: OTHER could not write to it
    fifo, made = directory.open(OTHER)
    fifo.close()
    assert made and os.lstat(path).st_uid == OTHER
    os.chmod(path, 0o666)  # its owner opened it to everyone
    again, made = directory.open(OTHER)
    again.close()
    assert made and stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_a_replaced_fifo_is_no_longer_current(directory: FifoDirectory) -> None:
    fifo, _ = directory.open(ME)
    try:
        os.unlink(fifo.path)
        assert not directory.is_current(fifo)
        os.mkfifo(fifo.path, 0o600)
        assert not directory.is_current(fifo)
    finally:
        fifo.close()


def test_a_directory_in_place_of_the_fifo_is_reported(directory: FifoDirectory) -> None:
    os.mkdir(directory.fifo_path(ME))
    os.mknod(os.path.join(directory.fifo_path(ME), "inside"))
    with pytest.raises(FifoDirError, match="remove it by hand"):
        directory.open(ME)


def test_only_uid_names_count_as_fifos(directory: FifoDirectory) -> None:
    for name in ("notes", "12a", "-1"):
        Path(directory.path, name).touch()
    fifo, _ = directory.open(ME)
    fifo.close()
    assert directory.uids() == [ME]


def test_fifo_users_take_names_and_uids() -> None:
    assert resolve_uids("root, 12345,,0") == [0, 12345]
    assert resolve_uids(None) == []
    with pytest.raises(FifoDirError, match="no user 'no-such-user-here'"):
        resolve_uids("no-such-user-here")
