"""The service's logger names: an operator contract (docs/logging.md).

Operators filter and route on these names, so a name stays what it is wherever its
module lives (``app.recorder`` logs from ``app/db/recorder.py``); every module of
``app`` takes its logger's name from here, and ``tests/test_logger_names.py``
holds the code and the page to this table. The library's own names are in
``timer_core.log_names``: the library must not know the service that hosts it.
"""

from __future__ import annotations

__all__ = [
    "BACKPRESSURE",
    "CLI",
    "DATABASE_STATUS",
    "DB_FILE_CHECK",
    "HISTORY_QUOTA",
    "INCIDENT_ROWS",
    "LOGGERS",
    "LOSS_LEDGER",
    "METRICS",
    "NODES",
    "NOTIFICATIONS",
    "PERIODIC",
    "PRIVATE_FILES",
    "RECORDER",
    "SERVER",
    "SERVICE",
    "SERVICE_LOCK",
    "UNENCODABLE",
    "WAL_CHECKPOINTS",
]

CLI = "app.cli"
SERVER = "app.server"
SERVICE = "app.service"
SERVICE_LOCK = "app.service_lock"
BACKPRESSURE = "app.backpressure"
RECORDER = "app.recorder"
DATABASE_STATUS = "app.database_status"
DB_FILE_CHECK = "app.db_file_check"
PRIVATE_FILES = "app.private_files"
HISTORY_QUOTA = "app.history_quota"
LOSS_LEDGER = "app.loss_ledger"
WAL_CHECKPOINTS = "app.wal_checkpoints"
INCIDENT_ROWS = "app.incident_rows"
UNENCODABLE = "app.unencodable"
NODES = "app.nodes"
NOTIFICATIONS = "app.notifications"
METRICS = "app.metrics"
PERIODIC = "app.periodic"

# Each name and what an operator finds under it; docs/logging.md shows the same.
LOGGERS = {
    CLI: "start-up warnings: a token or a database password visible on the command line",
    SERVER: "where the service listens, the open file limit and the descriptors kept for "
    "kills, and 'shutdown complete' after SIGINT or SIGTERM",
    SERVICE: "the database created, migrated or up to date (one line); the service started "
    "(timers re-armed) or the hub started; the reaper "
    "thread restarted, or stalled and the service exiting for its supervisor; on a hub, "
    "refused reads of another user's stack",
    SERVICE_LOCK: "the node lock lost with its database session, and taken again",
    BACKPRESSURE: "the recorder behind: the FIFOs not read, writes answered 503",
    RECORDER: "the database unwritable (events kept, retried) and writable again, "
    "events dropped, the recorder loop's errors",
    DATABASE_STATUS: "the database away and back (one line per outage), reads that met it",
    DB_FILE_CHECK: "an empty or foreign database file met at start",
    PRIVATE_FILES: "the database directory made, files other users can read",
    HISTORY_QUOTA: "the database over --max-db-size (oldest events pruned), and under again",
    LOSS_LEDGER: "lost events recorded, loss markers not written yet",
    WAL_CHECKPOINTS: "SQLite WAL checkpoints that failed",
    INCIDENT_ROWS: "an incident whose analysis failed",
    UNENCODABLE: "text that cannot be encoded as UTF-8, shown escaped",
    NODES: "this node's heartbeat failing, and beating again",
    NOTIFICATIONS: "notifications that could not be written, deliveries that failed or "
    "gave up (by channel id and name, never its URL), the sender's errors",
    METRICS: "the fleet's nodes that could not be counted for timer_nodes",
    PERIODIC: "a periodic task (beat, lock check, checkpoint) that failed a round",
}
