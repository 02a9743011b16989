"""``timer-service serve``: warn about what ``ps`` shows, refuse unsafe paths and
database files with one line, then run the service.

A start the service refuses (its port taken, its database out of reach, a path or a
user that cannot work) ends with one line on stderr, ``timer-service: ...`` saying
what to do, and exit status 1: no traceback, which put that sentence at the end of
5 KB. ``--log-level debug`` logs the traceback too, for a bug report."""

from __future__ import annotations

import argparse
import logging

from app import log_names
from app.access.callers import is_loopback
from app.access.path_safety import refuse_unsafe_paths
from app.cli.serve_flags import settings_from_args
from app.db.database import usable_url
from app.db.database_status import has_password
from app.db.db_file_check import check_database_file
from app.notify.channels import is_webhook
from app.ops.logs import configure_logging, flush_logs
from app.server import serve
from timer_core.sources.fifo_dir import FifoDirError, resolve_uids

__all__ = ["run_serve"]

logger = logging.getLogger(log_names.CLI)


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
    try:
        resolve_uids(settings.fifo_users)
    except FifoDirError as error:
        # Before the database is touched: the FIFOs are made last in the start.
        raise SystemExit(
            f"timer-service: {error}; create that user first, or leave it out of "
            "--fifo-users (its jobs can still ask for their FIFO with POST /fifos)"
        ) from None
    try:
        # First: the checks of the paths below read the URL.
        usable_url(settings.db_url)
        # Here, not in the app's start: an error there comes out as uvicorn's traceback.
        refuse_unsafe_paths(settings)
        check_database_file(settings.db_url)
        serve(settings)
    except (RuntimeError, OSError) as error:
        # The refusals of the start: ServiceLockError, DatabaseUnreachable, PortError,
        # FifoDirError, UnsafeDirectoryError and the rest say what to do; an OSError
        # of some other part names at least its path.
        raise SystemExit(_refusal(error)) from None
    return 0


def _refusal(error: RuntimeError | OSError) -> str:
    """The one line for a refused start, written after the log lines before it."""
    logger.debug("the start failed", exc_info=error)
    flush_logs()
    if isinstance(error, OSError) and not str(error).startswith(("--", "timer-service")):
        # A bare "[Errno 2] No such file or directory: '/x'" from a part that had no
        # refusal of its own for it: name what was asked and where to look.
        where = f" {error.filename}" if error.filename else ""
        return (
            f"timer-service: cannot start: {error.strerror or error}:{where}; check the paths "
            "given (--db-url, --fifo, --fifo-dir, --stack-dir, --uds, --token-file) exist "
            "and are this user's to use"
        )
    text = " ".join(str(error).split())  # one line, whatever the message held
    return text if text.startswith("timer-service:") else f"timer-service: {text}"
