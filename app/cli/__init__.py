"""The ``timer-service`` command: ``serve`` runs the service, ``doctor`` checks the host
for it, and the client's subcommands talk to a running one.

Each subcommand's parser is light; what it runs is imported when it runs: the service
(FastAPI, SQLAlchemy, alembic) takes a second or more to import, which
``timer-service timers`` at a terminal should not pay."""

from __future__ import annotations

import argparse

from app import __version__
from app.cli import client, doctor
from app.cli.serve_flags import add_serve_flags

__all__ = ["main"]


def _run_serve(args: argparse.Namespace) -> int:
    from app.cli.serve_command import run_serve

    return run_serve(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timer-service", description="A watchdog for stuck worker processes."
    )
    parser.add_argument("--version", action="version", version=f"timer-service {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the service (REST API, dashboard, metrics)",
        description="Every flag can also be set as TIMER_SERVICE_<FLAG> in the environment.",
        # Not the whole synopsis of every flag: a mistyped flag's error is then two
        # lines, not thirty with the error at the end.
        usage="timer-service serve [FLAGS]  (timer-service serve --help lists them)",
    )
    add_serve_flags(serve)
    serve.set_defaults(run=_run_serve)
    doctor.register(commands)
    client.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    raise SystemExit(args.run(args))
