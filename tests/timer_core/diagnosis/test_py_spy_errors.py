"""When py-spy fails, the capture says why in py-spy's own words: its ``Error:`` line,
not the last frame of a Rust backtrace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from timer_core import identify
from timer_core.diagnosis.stack_capture import StackCapturer, py_spy_error

BACKTRACE = """
Stack backtrace:
   0: anyhow::error::<impl anyhow::Error>::msg
   1: py_spy::python_process_info::get_python_version
   2: py_spy::python_spy::PythonSpy::new
   3: py_spy::dump::write_traces
   4: py_spy::dump::print_traces
   5: py_spy::run_spy_command
   6: py_spy::main
   7: std::sys::backtrace::__rust_begin_short_backtrace
   8: std::rt::lang_start::{{closure}}
   9: std::rt::lang_start_internal
  10: main
"""

# As py-spy 0.4 prints them (anyhow's format), with and without RUST_BACKTRACE.
SAMPLES = [
    pytest.param(
        "Error: Failed to find python version from target process\n" + BACKTRACE,
        "Error: Failed to find python version from target process",
        id="not-python-with-backtrace",
    ),
    pytest.param(
        "Error: Failed to find python version from target process\n",
        "Error: Failed to find python version from target process",
        id="not-python",
    ),
    pytest.param(
        "Error: Failed to get process executable name. Check that the process is running.\n"
        "\n"
        "Caused by:\n"
        "    0: No such file or directory (os error 2)\n"
        "    1: No such file or directory (os error 2)\n" + BACKTRACE,
        "Error: Failed to get process executable name. Check that the process is running. "
        "(No such file or directory (os error 2))",
        id="exited-numbered-causes",
    ),
    pytest.param(
        "Error: Failed to attach to process\n\nCaused by:\n    Permission denied (os error 13)\n",
        "Error: Failed to attach to process (Permission denied (os error 13))",
        id="one-cause",
    ),
    pytest.param(
        "Error: Permission denied (os error 13)\n" + BACKTRACE,
        "Error: Permission denied (os error 13)",
        id="permission-denied",
    ),
    pytest.param(
        "Permission Denied: Try running again with elevated permissions by going "
        "'sudo env \"PATH=$PATH\" !!'\n",
        "Permission Denied: Try running again with elevated permissions by going "
        "'sudo env \"PATH=$PATH\" !!'",
        id="not-root-hint",
    ),
    pytest.param(
        "\n  warning: something odd\nError: Timed out waiting for the process\n",
        "Error: Timed out waiting for the process",
        id="error-after-a-warning",
    ),
    pytest.param(BACKTRACE, "exit code 1", id="only-a-backtrace"),
    pytest.param("", "exit code 1", id="nothing"),
]


@pytest.mark.parametrize(("output", "expected"), SAMPLES)
def test_the_error_line_is_reported_not_the_backtrace(output: str, expected: str) -> None:
    assert py_spy_error(output, 1) == expected


needs_py_spy = pytest.mark.skipif(StackCapturer().py_spy is None, reason="py-spy is not installed")


@pytest.fixture
def not_python() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


@needs_py_spy
def test_a_real_py_spy_failure_is_reported_by_its_error_line(
    not_python: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUST_BACKTRACE", "1")  # the case that used to report "10: main"
    identity = identify(not_python.pid)
    assert identity is not None
    captured = StackCapturer(budget=10).capture(identity)
    assert captured.method == "proc"
    py_spy_notes = [note for note in captured.notes if note.startswith("py-spy")]
    assert py_spy_notes == [
        "py-spy: Error: Failed to find python version from target process",
        "py-spy (python only): Error: Failed to find python version from target process",
    ]
