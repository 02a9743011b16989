"""``timer-service doctor``: checks this host for what a service started with the same
flags (and ``TIMER_SERVICE_*`` settings) needs, and says for each check ok, warn or
fail, with what to do. Exits 1 on any fail, so it can gate a deployment; warnings
alone exit 0.

One module per family of checks: privileges (ptrace, capabilities), py-spy, torch's
worker server, file descriptors, paths, the database, the clock. Every check has a
time limit (``results.run_checks``): a hung py-spy or database is a fail, not a hang.
"""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.serve_flags import add_serve_flags, settings_from_args

from . import clock, database, descriptors, paths, privileges, py_spy, worker_server
from .report import print_json, print_table
from .results import Check, Status, run_checks

__all__ = ["CHECKS", "register", "run_doctor"]

CHECKS: list[Check] = [
    *privileges.CHECKS,
    *py_spy.CHECKS,
    *worker_server.CHECKS,
    *descriptors.CHECKS,
    *paths.CHECKS,
    *database.CHECKS,
    *clock.CHECKS,
]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check this host for what the service needs (exit 1 on a fail)",
        description="Takes serve's flags and TIMER_SERVICE_* settings, and checks this "
        "host for a service started with them: ptrace and capabilities, py-spy, torch's "
        "worker server, file descriptors, paths, the database, the clock. Exits 1 on any "
        "fail, 0 otherwise.",
    )
    add_serve_flags(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the results as a JSON list, for tooling"
    )
    parser.set_defaults(run=run_doctor)


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
