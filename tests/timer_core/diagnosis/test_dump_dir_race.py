"""The attack of issue 20, repeated: ``--stack-dir`` below a directory the second user
owns. Root makes the stack root again and again; the user, as fast as it can, renames
each new directory away and puts a link to a root-only file in its place. Root used to
``chmod`` by path after ``mkdir``, so the link won that race within 47 to 1,399 tries
and the file became 0711. Now the chain is checked first, by descriptor, so root
makes nothing there at all, and the file is never touched."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.second_user import SYSTEM_PYTHON, SecondUser, shared_dir
from timer_core.diagnosis.dump_dirs import DumpDirMaker

# The attacker, as the second user: Debian's python3, in-process renames and links (no
# fork per try), until root's side creates the file ``stop``. Prints its swaps and tries.
# The target's mode is printed too, so a run against the old code shows when it won.
ATTACKER = """
import os, sys
home, target, stop = sys.argv[1:4]
root, away = home + "/stacks", home + "/away"
swaps = tries = 0
print("ready", flush=True)
while not os.path.exists(stop):
    tries += 1
    try:
        os.rename(root, away)
    except OSError:
        pass
    else:
        swaps += 1
        try:
            os.symlink(target, root)
        except OSError:
            pass
        for remove in (os.unlink, os.rmdir):
            for path in (root, away):
                try:
                    remove(path)
                except OSError:
                    pass
    if tries % 3 == 0:  # a link already in place when root looks, too
        try:
            os.symlink(target, root)
            os.unlink(root)
        except OSError:
            pass
print(swaps, tries, flush=True)
"""
# Root's tries, and how long they go on at least (the user's loop runs meanwhile).
ROUNDS = 400
SECONDS = 2.0


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs Debian's python3")
def test_root_touches_no_file_while_the_user_swaps_its_stack_root(
    second_user: SecondUser, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "root-only"
    target.write_text("root's secret\n")
    target.chmod(0o600)
    before = os.lstat(target)
    with shared_dir() as shared:
        home = shared / "home"
        os.mkdir(home, 0o755)
        os.chown(home, second_user.uid, second_user.gid)
        attacker = second_user.popen(
            [SYSTEM_PYTHON, "-c", ATTACKER, str(home), str(target), str(shared / "stop")],
            stdout=subprocess.PIPE,
        )
        assert attacker.stdout is not None and attacker.stdout.readline().strip() == b"ready"
        maker = DumpDirMaker(home / "stacks")
        made: list[Path | None] = []
        at_least = time.monotonic() + SECONDS
        with caplog.at_level(logging.WARNING, logger="timer_core.dump_dirs"):
            while len(made) < ROUNDS or time.monotonic() < at_least:
                made.append(maker.ensure(second_user.uid, second_user.gid))
        (shared / "stop").touch()
        out, _ = attacker.communicate(timeout=30)
        swaps, tries = map(int, out.split())
        after = os.lstat(target)
        assert (after.st_uid, after.st_gid, after.st_mode) == (
            before.st_uid,
            before.st_gid,
            before.st_mode,
        ), f"root changed {target}: mode {stat.S_IMODE(after.st_mode):o}, uid {after.st_uid}"
        assert set(made) == {None}  # refused every time
        assert tries >= ROUNDS and swaps == 0  # the user kept trying; root made nothing there
        assert f"{home}, which belongs to uid {second_user.uid}" in caplog.text
