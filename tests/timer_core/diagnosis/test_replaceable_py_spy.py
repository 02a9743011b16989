"""The service never runs a py-spy another user could replace: it runs it as root (or as
the worker's user with CAP_SYS_PTRACE, which can trace root's processes too), so a
binary in a directory others can write would run their code with those rights."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from timer_core.diagnosis.stack_capture import StackCapturer
from timer_core.safe_dirs import replaceable_by_others


def _program(directory: Path, mode: int = 0o755) -> Path:
    program = directory / "py-spy"
    program.write_text('#!/bin/sh\ntouch "$0.ran"\n')
    program.chmod(mode)
    return program


def test_a_program_in_a_directory_others_can_write_is_replaceable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename py-spy away and put theirs there
    why = replaceable_by_others(str(_program(shared)))
    assert why is not None and str(shared) in why


def test_a_program_others_can_write_is_replaceable(tmp_path: Path) -> None:
    why = replaceable_by_others(str(_program(tmp_path, 0o757)))
    assert why is not None and "writable by group or others" in why


def test_a_link_to_a_program_in_a_shared_directory_is_replaceable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = tmp_path / "py-spy"
    link.symlink_to(_program(shared))
    assert replaceable_by_others(str(link)) is not None


def test_the_installed_py_spy_is_not_replaceable() -> None:
    installed = Path(sys.executable).with_name("py-spy")
    found = str(installed) if installed.exists() else shutil.which("py-spy")
    if found is None:
        pytest.skip("no py-spy installed")
    assert replaceable_by_others(found) is None


def test_the_capturer_refuses_a_replaceable_py_spy_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    planted = _program(shared)
    # Found both ways the capturer looks: beside the Python it runs, and on PATH.
    monkeypatch.setattr(sys, "executable", str(shared / "python3"))
    monkeypatch.setenv("PATH", f"{shared}{os.pathsep}{os.environ.get('PATH', '')}")
    with caplog.at_level(logging.WARNING, logger="timer_core.stack_capture"):
        capturer = StackCapturer(use_worker_server=False)
    assert capturer.py_spy is None
    assert any(
        str(planted) in record.getMessage() and "another user could replace" in record.getMessage()
        for record in caplog.records
    ), caplog.text
