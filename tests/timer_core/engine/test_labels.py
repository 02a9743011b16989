"""Job and rank labels from a worker's environment, and what garbage turns into."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.waiting import wait_until
from timer_core.engine.labels import Labels, labels_from_environ, read_labels

TORCHRUN_ENV = {"TORCHELASTIC_RUN_ID": "job-42", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}


@pytest.fixture
def labelled_worker() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, **TORCHRUN_ENV},
    )
    yield process
    process.kill()
    process.wait()


def environ(**values: str) -> bytes:
    return b"\0".join(f"{k}={v}".encode() for k, v in values.items()) + b"\0"


def test_a_real_workers_labels_are_read_from_its_environment(
    labelled_worker: subprocess.Popen[bytes],
) -> None:
    assert wait_until(lambda: read_labels(labelled_worker.pid).job_id is not None)
    assert read_labels(labelled_worker.pid) == Labels("job-42", 3, 1, 4)


def test_a_process_that_does_not_exist_has_no_labels() -> None:
    assert read_labels(2**22 + 5) == Labels()  # above pid_max: never a process


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, Labels()),
        ({"RANK": "-1", "WORLD_SIZE": "4"}, Labels(world_size=4)),
        ({"RANK": "4", "WORLD_SIZE": "4"}, Labels(world_size=4)),  # rank >= world_size
        ({"RANK": "1", "WORLD_SIZE": "0"}, Labels(rank=1)),
        ({"RANK": "1e3", "LOCAL_RANK": " 2", "WORLD_SIZE": "9" * 40}, Labels()),
        ({"TORCHELASTIC_RUN_ID": "x" * 257}, Labels()),
        ({"TORCHELASTIC_RUN_ID": "a\nb"}, Labels()),
        ({"TORCHELASTIC_RUN_ID": ""}, Labels()),
        ({"TORCHELASTIC_RUN_ID": "x" * 256}, Labels(job_id="x" * 256)),
        ({"TORCHELASTIC_RESTART_COUNT": "3"}, Labels(restart_count=3)),
        ({"TORCHELASTIC_RESTART_COUNT": "0"}, Labels(restart_count=0)),
        ({"TORCHELASTIC_RESTART_COUNT": "-1"}, Labels()),
        ({"TORCHELASTIC_RESTART_COUNT": "two"}, Labels()),
        ({"TORCHELASTIC_RESTART_COUNT": "9" * 40}, Labels()),
    ],
)
def test_garbage_becomes_null_labels_never_an_error(
    values: dict[str, str], expected: Labels
) -> None:
    assert labels_from_environ(environ(**values)) == expected


def test_non_utf8_and_missing_separators_are_ignored() -> None:
    block = b"TORCHELASTIC_RUN_ID=\xff\xfe\0RANK\0WORLD_SIZE=2\0RANK=1\0"
    assert labels_from_environ(block) == Labels(None, 1, None, 2)


@pytest.mark.parametrize(
    "job_id", [b"a\xed\xa0\x80b", b"a\x1bb", b"a\xc2\x85b", b"\xe2\x80\xa8", b"x" * 257]
)
def test_a_job_id_that_could_not_be_recorded_or_shown_is_null(job_id: bytes) -> None:
    """Issue 20: a worker's environment is its own to write. A surrogate's bytes
    (U+D800 as UTF-8), a control character (ESC, C1 NEL), a line separator or a length
    over the limit never become a label that a page or the database would choke on."""
    block = b"TORCHELASTIC_RUN_ID=" + job_id + b"\0RANK=0\0WORLD_SIZE=2\0"
    assert labels_from_environ(block) == Labels(None, 0, None, 2)


def test_explicit_labels_win_over_the_environment() -> None:
    from_env = Labels("job", 1, 1, 4)
    assert from_env.merged(Labels(rank=2)) == Labels("job", 2, 1, 4)
    assert from_env.merged(Labels()) == from_env
