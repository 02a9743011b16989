"""The ``timer-service`` command."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .logs import configure_logging
from .main import create_app
from .settings import LOG_LEVELS, Settings

__all__ = ["main"]

logger = logging.getLogger("app.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timer-service", description="A watchdog for stuck worker processes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the service (REST API, dashboard, metrics)",
        description="Every flag can also be set as TIMER_SERVICE_<FLAG> in the environment.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this host only)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--db-url", help="SQLAlchemy URL (default sqlite:///./timer-service.db, embedded)"
    )
    serve.add_argument("--fifo", help="also read torch's FileTimerClient requests at this path")
    serve.add_argument(
        "--fifo-dir",
        help="keep one FIFO per user in DIR/<uid>, owned by that user; a request read "
        "from it may only target that user's processes",
    )
    serve.add_argument(
        "--fifo-users",
        help="users (names or uids, comma-separated) whose FIFO in --fifo-dir is made at "
        "start; others ask for theirs with POST /fifos",
    )
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on writes")
    serve.add_argument(
        "--escalate-after",
        type=float,
        help="seconds after a non-SIGKILL signal before SIGKILL (default 10; 0 disables)",
    )
    serve.add_argument(
        "--signal-children",
        action="store_true",
        default=None,
        help="signal the worker's child processes too (e.g. data-loader workers)",
    )
    serve.add_argument(
        "--no-capture-stacks",
        dest="capture_stacks",
        action="store_false",
        default=None,
        help="do not capture an expired worker's stack before signalling it",
    )
    serve.add_argument(
        "--stack-budget",
        type=float,
        help="seconds a stack capture may take before the kill goes ahead (default 2)",
    )
    serve.add_argument(
        "--stack-dir",
        help="where to make each user's stack dump directory, DIR/<uid> (default "
        "/run/timer-service/stacks as root, else $XDG_RUNTIME_DIR/timer-service/stacks)",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per HTTP request (off by default)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        db_url=args.db_url,
        fifo=args.fifo,
        fifo_dir=args.fifo_dir,
        fifo_users=args.fifo_users,
        token=args.token,
        escalate_after=args.escalate_after,
        signal_children=args.signal_children,
        capture_stacks=args.capture_stacks,
        stack_budget=args.stack_budget,
        stack_dir=args.stack_dir,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    # One format for every line, uvicorn's included: it gets no config of its own
    # (log_config=None) and its loggers hand their records to ours.
    configure_logging(settings.log_level, access_log=settings.access_log)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        logger.warning(
            "binding %s without --token lets anyone who can reach this port arm and release timers",
            settings.host,
        )
    logger.info(
        "timer-service on http://%s:%d (db %s)", settings.host, settings.port, settings.db_url
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=None,
        access_log=settings.access_log,
    )


if __name__ == "__main__":
    main()
