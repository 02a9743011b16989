"""Run the real ``timer-service doctor`` (``python -m app.cli doctor``) and read its
``--json`` results, for the doctor tests.

Each run starts at once (``DoctorRun``) and is waited for when its results are
needed, so a module can start all its bad hosts' doctors together: each is a process
of its own, and the module takes as long as the slowest, not their sum.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "DoctorRun", "Doctored", "doctor_command"]

# The checkout under test, whatever the directory pytest runs from.
ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class Doctored:
    returncode: int
    results: list[dict[str, str]]
    stdout: str
    stderr: str

    def result(self, name: str) -> dict[str, str]:
        """The one result called ``name``."""
        found = [r for r in self.results if r["name"] == name]
        assert len(found) == 1, (name, self.stdout, self.stderr)
        return found[0]

    def failed(self) -> list[str]:
        return [r["name"] for r in self.results if r["status"] == "fail"]

    def only_failure(self, name: str) -> dict[str, str]:
        """The result of ``name``, the one check that failed: doctor exited 1 for it."""
        assert self.returncode == 1, self.stdout + self.stderr
        assert self.failed() == [name], self.stdout + self.stderr
        return self.result(name)


def doctor_command(*flags: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "app.cli", "doctor", *flags]


class DoctorRun:
    """doctor with ``flags`` (under ``prefix``, e.g. setpriv), running from now on."""

    def __init__(
        self,
        *flags: str,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        preexec_fn: Callable[[], None] | None = None,
        json_output: bool = True,
    ) -> None:
        self.json_output = json_output
        more = ["--json"] if json_output else []
        self.process = subprocess.Popen(
            [*prefix, *doctor_command(*flags, *more, python=python)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        self._done: Doctored | None = None

    def finish(self) -> Doctored:
        """Its results, once it has exited (killed after two minutes)."""
        if self._done is None:
            try:
                out, err = self.process.communicate(timeout=120)
            finally:
                self.kill()
            parsed: list[dict[str, Any]] = json.loads(out) if self.json_output and out else []
            self._done = Doctored(self.process.returncode, parsed, out, err)
        return self._done

    def kill(self) -> None:
        """Ended, and its pipes closed (a run no selected test waited for, too)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
