"""Whether the database answers, known without waiting for it (contract 14).

Every part that would otherwise find out the slow way asks here first: a write that
would wait for its commit answers 202 at once, a read answers 503 instead of trying,
``/healthz`` says degraded, a scrape skips the fleet's node counts.

Three things say the database is away:

- a cheap probe (``SELECT 1``), on a thread of its own every ``interval`` seconds, so
  the service notices even when idle;
- a probe or a recorder batch that has been waiting longer than ``hang_after``: a
  server that hangs (stopped, or its host gone) refuses nothing, it only never
  answers, and no client-side timeout covers a query already sent;
- a read that failed on the database (``failed``, from the app's error handler).

An outage logs one line when it starts and one when it ends, whatever the number of
requests that met it. When the database answers again, ``on_return`` callbacks run at
once (the node's heartbeat), so no node looks down for an outage of its database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app import log_names
from app.ops.periodic import Periodic

__all__ = [
    "DATABASE_ERRORS",
    "HANG_SECONDS",
    "PROBE_SECONDS",
    "DatabaseStatus",
    "DatabaseUnreachable",
    "has_password",
    "masked_url",
    "one_line",
    "reach_database",
    "unreachable_message",
]

logger = logging.getLogger(log_names.DATABASE_STATUS)

PROBE_SECONDS = 1.0
# A probe or batch waiting this long is a server that hangs: well past a busy commit,
# well within /healthz's 10 s.
HANG_SECONDS = 3.0
# Errors of the database being away (not of the data): a read meeting one answers 503.
DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)
# Without a probe (SQLite) nothing says when an outage ends: its reads' errors are
# logged at most this often instead.
_QUIET_SECONDS = 60.0


def masked_url(db_url: str) -> str:
    """``db_url`` with its password replaced by ``***``: what logs, errors and pages show."""
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a URL SQLAlchemy can parse: show none of it rather than a secret.
        return "<an unparsable database URL>"


def has_password(db_url: str) -> bool:
    """Whether ``db_url`` carries a password (an unparsable one may: assume so)."""
    try:
        return make_url(db_url).password is not None
    except (ArgumentError, ValueError):
        return True


class DatabaseStatus:
    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = PROBE_SECONDS,
        hang_after: float = HANG_SECONDS,
        busy_since: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``busy_since``: when the recorder's batch in flight started (monotonic), or
        None; a batch waiting past ``hang_after`` means the same as a hanging probe."""
        self._engine = engine
        self._hang_after = hang_after
        self._busy_since = busy_since
        self._lock = threading.Lock()
        self._down_reason: str | None = None
        self._down_at = 0.0
        self._probing_since: float | None = None
        self._on_return: list[Callable[[], None]] = []
        self._logged_read_at = -_QUIET_SECONDS
        self._rounds = Periodic("timer-db-probe", interval, self.probe, on_error=self._probe_failed)

    def on_return(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (on the probe's thread) each time the database answers again."""
        self._on_return.append(callback)

    def start(self) -> None:
        # A SQLite file does not go away: a locked file or a full disk shows as the
        # recorder's write errors, and a probe would only add a wake-up a second.
        if self._engine.dialect.name != "sqlite":
            self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    # ---- what everyone asks ----------------------------------------------------------------

    def problem(self, hang_after: float | None = None) -> str | None:
        """Why the database cannot be used now, or None. Never waits on it. A write,
        which must answer within a second, passes a shorter ``hang_after``."""
        patience = self._hang_after if hang_after is None else hang_after
        now = time.monotonic()
        with self._lock:
            if self._down_reason is not None:
                return f"the database is unavailable: {self._down_reason}"
            probing = self._probing_since
        for started in (probing, self._busy_since()):
            if started is not None and now - started > patience:
                return f"the database has not answered for {now - started:.1f} s"
        return None

    # ---- what the probe and the failing reads report ---------------------------------------

    def probe(self) -> None:
        """One round of the probe: ``SELECT 1``, then the outcome recorded."""
        with self._lock:
            self._probing_since = time.monotonic()
        try:
            with self._engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        finally:
            with self._lock:
                self._probing_since = None
        self.answered()

    def failed(self, reason: str) -> None:
        """The database failed a request: logged if this starts an outage."""
        with self._lock:
            starting = self._down_reason is None
            self._down_reason = reason
            if starting:
                self._down_at = time.monotonic()
        if starting:
            logger.error(
                "the database is unavailable (%s): kills go on, writes answer 202 and are "
                "recorded when it returns, reads of history answer 503",
                reason,
            )

    def answered(self) -> None:
        """The database answered: logged, and ``on_return`` run, if this ends an outage."""
        with self._lock:
            was_down = self._down_reason is not None
            self._down_reason = None
            lasted = time.monotonic() - self._down_at
        if not was_down:
            return
        logger.warning("the database answers again after %.1f s", lasted)
        for callback in self._on_return:
            try:
                callback()
            except Exception as error:  # one failing callback must not skip the others
                logger.error("after the database returned: %s", one_line(error))

    def read_failed(self, error: BaseException) -> str:
        """A read met ``error`` (one of ``DATABASE_ERRORS``): what to tell its client.
        With a probe running, this starts an outage that the probe ends; without one,
        nothing could end it, so the error is only logged, at most once a minute."""
        reason = one_line(error)
        if self._rounds.running:
            self.failed(reason)
        else:
            now = time.monotonic()
            if now - self._logged_read_at >= _QUIET_SECONDS:
                self._logged_read_at = now
                logger.error("a read failed on the database: %s", reason)
        return f"the database is unavailable: {reason}"

    def _probe_failed(self, error: Exception) -> None:
        self.failed(one_line(error))


def one_line(error: BaseException) -> str:
    """A database error as one short line: the driver's own message, not SQLAlchemy's
    paragraph with the statement and a link."""
    cause = getattr(error, "orig", None) or error
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text[:300]}"


class DatabaseUnreachable(RuntimeError):
    """The database could not be reached at start (the message is one line, with advice)."""


def unreachable_message(db_url: str, error: BaseException) -> str:
    """One line: which database (password masked), what failed, and what to check for
    that backend."""
    if db_url.startswith("sqlite"):
        return (
            f"cannot open or write the database {masked_url(db_url)}: {one_line(error)}; "
            "check that its directory exists and is writable, or pass another --db-url."
        )
    reason = one_line(error).rstrip(".")
    return (
        f"cannot reach the database {masked_url(db_url)}: {reason}; check that "
        "the server runs and accepts connections there (pg_isready), and the host, port, "
        "user, password and database name; --db-wait SECONDS keeps trying at start while "
        "it comes up."
    )


def reach_database(engine: Engine, db_url: str, wait_seconds: float) -> None:
    """Return once the database answers; retry for up to ``wait_seconds`` (``--db-wait``),
    then raise ``DatabaseUnreachable``. A supervisor's restart also retries, but a
    service started with its database (one boot, one compose file) need not fail once."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    told = False
    while True:
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return
        except DATABASE_ERRORS as error:
            if time.monotonic() >= deadline:
                raise DatabaseUnreachable(unreachable_message(db_url, error)) from None
            if not told:
                told = True
                logger.warning(
                    "waiting up to %.0f s for the database %s (%s)",
                    wait_seconds,
                    masked_url(db_url),
                    one_line(error),
                )
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
