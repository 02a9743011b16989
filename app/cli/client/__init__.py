"""The terminal client: ``timer-service timers|jobs|incidents|events|nodes``, ``timer
ID``, ``job JOB_ID``, ``incident ID``, ``stack TIMER_ID`` and ``events --follow``,
talking to a running service. Each subcommand gets the connection flags and the exit
codes in its ``--help``; an error is one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from app.cli.client.connection import Connection, add_connection_flags
from app.cli.client.exits import EXIT_CODES_HELP, ClientError, ExitCode
from app.cli.client.follow import follow_events
from app.cli.client.incident_view import show_incident
from app.cli.client.listing import LISTINGS, Listing, add_listing_flags, list_page
from app.cli.client.safe_text import printable
from app.cli.client.showing import show_job, show_stack, show_timer

__all__ = ["register"]

Command = Callable[[argparse.Namespace, Connection, httpx.Client], int]
if TYPE_CHECKING:  # not subscriptable at run time
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def register(commands: Commands) -> None:
    """Adds the client's subcommands."""
    for listing in LISTINGS:
        parser = _add(commands, listing.name, listing.help, _lister(listing))
        add_listing_flags(parser, listing)
        if listing.name == "events":
            parser.add_argument(
                "--follow",
                "-f",
                action="store_true",
                help="show the newest events (--limit of them, default 10), then each new "
                "one as it is recorded, until Ctrl-C; with --json, one event a line",
            )
    for name, what, id_name, run in (
        ("timer", "show one timer", "timer_id", show_timer),
        (
            "incident",
            "show an incident: summary, ranks, groups, collectives",
            "incident_id",
            show_incident,
        ),
    ):
        parser = _add(commands, name, what, run)
        parser.add_argument(id_name, type=_id, metavar=id_name.upper())
        parser.add_argument("--json", action="store_true", help="print the service's JSON as is")
    parser = _add(commands, "job", "show a job and the latest timer of each rank", show_job)
    parser.add_argument("job_id", metavar="JOB_ID")
    parser.add_argument("--uid", type=int, help="whose job, when several users' jobs carry this id")
    parser.add_argument("--json", action="store_true", help="print the service's JSON as is")
    parser = _add(
        commands,
        "stack",
        "print the stack captured before a timer's kill, or in an incident",
        show_stack,
    )
    parser.add_argument("timer_id", type=_id, metavar="TIMER_ID")
    parser.add_argument(
        "--incident",
        type=_id,
        metavar="ID",
        help="the stack this incident captured of the rank with TIMER_ID (every rank's, "
        "not only the killed one's)",
    )


def _add(commands: Commands, name: str, what: str, run: Command) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=what,
        description=what[0].upper() + what[1:] + ", from a running timer-service.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_flags(parser)
    parser.set_defaults(run=lambda args: _run(run, args))
    return parser


def _lister(listing: Listing) -> Command:
    def run(args: argparse.Namespace, connection: Connection, client: httpx.Client) -> int:
        if getattr(args, "follow", False):
            filters = {spec.param: getattr(args, spec.param) for spec in listing.filters}
            if args.cursor is not None:
                raise ClientError(ExitCode.USAGE, "--follow goes forward: leave out --cursor")
            return follow_events(args, connection, client, filters)
        return list_page(listing, args, connection, client)

    return run


def _id(raw: str) -> int:
    """An id as the service makes them: a positive integer (15 digits, fleet-wide)."""
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an id (a positive whole number)")
    return int(raw)


def _run(command: Command, args: argparse.Namespace) -> int:
    try:
        connection = Connection.from_args(args)
        with connection.client() as client:
            return command(args, connection, client)
    except ClientError as error:
        # The service's detail, or another server's text: one line, nothing that acts
        # on the terminal.
        print(f"timer-service {args.command}: {printable(error.message)}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130  # the shell's code for Ctrl-C; --follow ends on it with 0 instead
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say, and no second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
