"""Runs every doctor check against the settings serve's flags make, prints the results
and gives the exit code."""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.serve_flags import settings_from_args

from . import clock, database, descriptors, paths, privileges, py_spy, worker_server
from .report import print_json, print_table
from .results import Check, Status, run_checks

__all__ = ["CHECKS", "run_doctor"]

CHECKS: list[Check] = [
    *privileges.CHECKS,
    *py_spy.CHECKS,
    *worker_server.CHECKS,
    *descriptors.CHECKS,
    *paths.CHECKS,
    *database.CHECKS,
    *clock.CHECKS,
]


def run_doctor(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    results = run_checks(CHECKS, settings)
    try:
        if args.json:
            print_json(results, sys.stdout)
        else:
            print_table(results, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (| head, grep -q): the exit code still says it all.
        # Python's own flush at exit would fail again on the pipe: point it elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if any(result.status == Status.FAIL for result in results) else 0
