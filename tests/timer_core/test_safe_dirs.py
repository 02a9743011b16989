"""Directories made by descriptor (``timer_core.safe_dirs``): what is made, and what is
refused, with a real second user owning, writing and planting links on the way."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.second_user import SecondUser, shared_dir
from timer_core.safe_dirs import UnsafeDirectoryError, check_directory, open_directory

ME = os.geteuid()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_missing_levels_are_made_with_exact_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        fd = open_directory(tmp_path / "a" / "b" / "c", "the test dir", make=(0o711, 0o755))
    finally:
        os.umask(old)
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b" / "c"))
    finally:
        os.close(fd)
    assert [mode_of(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o755, 0o755, 0o711]


def test_a_missing_level_is_not_made_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_directory(tmp_path / "missing" / "deeper", "the test dir")
    check_directory(tmp_path / "missing" / "deeper", "the test dir")  # to be made: fine
    assert not (tmp_path / "missing").exists()


def test_a_directory_others_can_write_is_refused_above_and_at_the_place(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(UnsafeDirectoryError) as above:
        open_directory(loose / "stacks", "--stack-dir", make=(0o711, 0o755))
    message = str(above.value)
    assert f"--stack-dir {loose}/stacks lies below {loose}" in message
    assert "is writable by group or others (mode 0777)" in message
    assert "use a directory that only root or uid" in message  # says what to do
    assert not (loose / "stacks").exists()
    with pytest.raises(
        UnsafeDirectoryError, match=r"--uds.s directory \S+ is writable by group or others"
    ):
        check_directory(loose, "--uds's directory")


def test_a_sticky_ancestor_is_fine_and_a_sticky_place_only_when_allowed() -> None:
    with shared_dir(0o1777) as sticky:
        fd = open_directory(sticky / "mine", "the test dir", make=(0o700, 0o755))
        os.close(fd)
        assert mode_of(sticky / "mine") == 0o700
        with pytest.raises(UnsafeDirectoryError, match="mode 1777"):
            check_directory(sticky, "the database's directory")
        check_directory(sticky, "--fifo's directory", sticky_last=True)


def test_links_of_root_are_followed_above_the_place_and_not_at_it(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    fd = open_directory(tmp_path / "link" / "made", "the test dir", make=(0o700, 0o755))
    os.close(fd)
    assert (tmp_path / "real" / "made").is_dir()
    with pytest.raises(UnsafeDirectoryError, match="is a symbolic link"):
        open_directory(tmp_path / "link", "--fifo-dir", follow_last=False)


def test_a_failed_walk_through_an_absolute_link_closes_no_descriptor_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An absolute link makes the walk close its level and open "/" again. Out of
    # descriptors (EMFILE: a stand-in, as nothing real fails exactly there), the
    # handler closed the old number a second time, by then maybe a pidfd another
    # thread just opened for a kill.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real_open, real_close = os.open, os.close
    opened_root: list[int] = []
    live: set[int] = set()  # opened by the walk and not yet closed
    closed_twice: list[int] = []

    def failing_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if path == "/" and opened_root:
            raise OSError(errno.EMFILE, "Too many open files")
        fd = real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]
        live.add(fd)
        if path == "/":
            opened_root.append(fd)
        return fd

    def recording_close(fd: int) -> None:
        if fd not in live:
            closed_twice.append(fd)
            return  # never close what may be another's by now
        live.discard(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", failing_open)
    monkeypatch.setattr(os, "close", recording_close)
    with pytest.raises(OSError, match="Too many open files"):
        open_directory(tmp_path / "link" / "made", "the test dir", make=(0o700, 0o755))
    monkeypatch.undo()
    assert closed_twice == [] and live == set(), (closed_twice, live)
    assert not (tmp_path / "real" / "made").exists()


def test_a_directory_of_another_user_on_the_way_is_refused(second_user: SecondUser) -> None:
    with shared_dir() as shared:
        theirs = shared / "theirs"
        second_user_dir(second_user, theirs)
        with pytest.raises(UnsafeDirectoryError) as refused:
            open_directory(theirs / "a" / "b", "--stack-dir", make=(0o711, 0o755))
        assert f"lies below {theirs}, which belongs to uid {second_user.uid}" in str(refused.value)
        assert os.listdir(theirs) == []  # nothing made in it


@pytest.mark.parametrize("level", ["above", "at"])
def test_a_planted_link_is_refused_not_followed(second_user: SecondUser, level: str) -> None:
    """In a sticky directory (as /tmp) the second user plants a link to a directory of
    root's: at any level of the path, it is refused, and nothing is made where it leads."""
    with shared_dir(0o1777) as sticky, shared_dir(0o755) as roots:
        second_user.run(["ln", "-s", str(roots), str(sticky / "planted")], check=True)
        place = sticky / "planted" / "stacks" if level == "above" else sticky / "planted"
        with pytest.raises(UnsafeDirectoryError) as refused:
            open_directory(place, "--stack-dir", make=(0o711, 0o755), follow_last=False)
        why = f"is a symbolic link of uid {second_user.uid}" if level == "above" else "link"
        assert why in str(refused.value)
        assert os.listdir(roots) == []


def second_user_dir(user: SecondUser, path: Path) -> None:
    """``path`` made by the second user itself (its parent must let it)."""
    os.mkdir(path, 0o755)
    os.chown(path, user.uid, user.gid)
