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

from app.cli.serve_flags import add_serve_flags

__all__ = ["register"]


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
    parser.set_defaults(run=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> int:
    # Imported here, not above: the checks bring the database stack and the service,
    # which the client's subcommands (timer-service timers, ...) should not pay for.
    from app.cli.doctor.run import run_doctor

    return run_doctor(args)
