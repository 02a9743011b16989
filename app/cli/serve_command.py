"""``timer-service serve``: warn about what ``ps`` shows, refuse unsafe paths and
database files with one line, then run the service."""

from __future__ import annotations

import argparse
import logging

from app import log_names
from app.access.callers import is_loopback
from app.access.path_safety import refuse_unsafe_paths
from app.cli.serve_flags import add_serve_flags, settings_from_args
from app.db.database_status import has_password, masked_url
from app.db.db_file_check import DatabaseFileError, check_database_file
from app.notify.channels import is_webhook
from app.ops.logs import configure_logging
from app.server import serve

__all__ = ["register"]

logger = logging.getLogger(log_names.CLI)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the service (REST API, dashboard, metrics)",
        description="Every flag can also be set as TIMER_SERVICE_<FLAG> in the environment.",
    )
    add_serve_flags(parser)
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # One format for every line, uvicorn's included: it gets no config of its own
    # (log_config=None) and its loggers hand their records to ours.
    configure_logging(settings.log_level, access_log=settings.access_log)
    if args.token:
        logger.warning(
            "--token is visible to every user of this host (ps, /proc/PID/cmdline); "
            "use --token-file PATH or TIMER_SERVICE_TOKEN instead"
        )
    if args.db_url and has_password(args.db_url):
        logger.warning(
            "--db-url's password is visible to every user of this host (ps, "
            "/proc/PID/cmdline); pass the URL as TIMER_SERVICE_DB_URL from a file only the "
            "service reads (systemd's EnvironmentFile), or keep the password in ~/.pgpass"
        )
    if not is_loopback(settings.host) and settings.host != "localhost" and not settings.token:
        logger.warning(
            "binding %s without a token: callers from other hosts cannot be identified, so "
            "their writes are refused; give operators a token with --token-file",
            settings.host,
        )
    if settings.alertmanager_url and not is_webhook(settings.alertmanager_url):
        raise SystemExit(
            f"--alertmanager-url must be an http:// or https:// URL, such as "
            f"http://127.0.0.1:9093 (got {settings.alertmanager_url[:100]!r})"
        )
    # Here, not in the app's start: an error there comes out as uvicorn's traceback.
    refuse_unsafe_paths(settings)
    try:
        check_database_file(settings.db_url)
    except DatabaseFileError as error:
        raise SystemExit(str(error)) from None
    logger.info(
        "timer-service on http://%s:%d%s (db %s)",
        settings.host,
        settings.port,
        f" and unix:{settings.uds}" if settings.uds else "",
        masked_url(settings.db_url),
    )
    serve(settings)
    return 0
