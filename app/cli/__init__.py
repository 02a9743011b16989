"""The ``timer-service`` command: ``serve`` runs the service; the other subcommands
each live in a module of their own and register themselves here."""

from __future__ import annotations

import argparse

from app import __version__
from app.cli import client, doctor, serve_command

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timer-service", description="A watchdog for stuck worker processes."
    )
    parser.add_argument("--version", action="version", version=f"timer-service {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_command.register(commands)
    doctor.register(commands)
    client.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    raise SystemExit(args.run(args))
