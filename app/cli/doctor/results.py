"""What a doctor check is and what it finds: a name, ok, warn or fail, what was found,
and what to do about it; and the runner that gives every check a time limit.

Each check runs on a thread of its own, all at once, so ``doctor`` takes as long as its
slowest check, not their sum. A check that does not return within its limit (a py-spy
stuck on a worker, a database server that never answers) becomes a fail saying so: the
threads are daemons, so one that never returns cannot hold the command either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.settings import Settings

__all__ = ["Check", "Result", "Status", "run_checks"]


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but not as well as it could: exit 0
    FAIL = "fail"  # a service started with these settings would miss something: exit 1


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: Status
    found: str  # what the check saw, in one sentence
    fix: str = ""  # what to do, for a warn or a fail

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "found": self.found, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class Check:
    """A family of checks: ``run`` returns one result per thing it looked at."""

    name: str
    run: Callable[[Settings], list[Result]]
    timeout: float  # seconds, then the check is a fail
    hung_fix: str  # what to do when it did not return in time


def _run_one(check: Check, settings: Settings, out: list[list[Result]]) -> None:
    try:
        out.append(check.run(settings))
    except Exception as error:  # a check that breaks is a finding, not a traceback
        why = f"the check itself failed: {type(error).__name__}: {error}"
        out.append([Result(check.name, Status.FAIL, why, check.hung_fix)])


def run_checks(checks: Sequence[Check], settings: Settings) -> list[Result]:
    """Every check's results, in the order of ``checks``."""
    started = time.monotonic()
    running: list[tuple[Check, threading.Thread, list[list[Result]]]] = []
    for check in checks:
        out: list[list[Result]] = []
        thread = threading.Thread(
            target=_run_one, args=(check, settings, out), name=f"doctor-{check.name}", daemon=True
        )
        thread.start()
        running.append((check, thread, out))
    results: list[Result] = []
    for check, thread, out in running:
        thread.join(max(0.0, started + check.timeout - time.monotonic()))
        if out:
            results.extend(out[0])
        else:
            found = f"no answer within {check.timeout:g} s"
            results.append(Result(check.name, Status.FAIL, found, check.hung_fix))
    return results
