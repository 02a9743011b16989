"""Service settings: CLI flags, else ``TIMER_SERVICE_*`` environment variables, else defaults."""

from __future__ import annotations

import math
import os
import re
import socket
import stat
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["LOG_LEVELS", "Settings", "parse_byte_size", "read_token_file"]

_PREFIX = "TIMER_SERVICE_"


def _env_str(name: str, default: str | None) -> str | None:
    value = os.environ.get(_PREFIX + name)
    return value if value not in (None, "") else default


def _env_number(name: str, default: float, kind: type[int] | type[float]) -> Any:
    raw = os.environ.get(_PREFIX + name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(
            f"{_PREFIX}{name}={raw!r} is not a valid {kind.__name__}; fix or unset it"
        ) from None


def _env_seconds(name: str, default: float) -> float:
    """A number of seconds ≥ 0 (0 turns off what it times)."""
    seconds = float(_env_number(name, default, float))
    if not (math.isfinite(seconds) and seconds >= 0):
        raise SystemExit(f"{_PREFIX}{name}={seconds!r} is not a number of seconds >= 0")
    return seconds


def _env_octal(name: str, default: int) -> int:
    raw = os.environ.get(_PREFIX + name)
    if raw in (None, ""):
        return default
    try:
        return int(raw, 8)
    except ValueError:
        raise SystemExit(f"{_PREFIX}{name}={raw!r} is not an octal mode such as 600") from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_byte_size(raw: str) -> int:
    """``"2G"`` → 2147483648 (K, M, G, T are powers of 1024; ``B``/``iB`` optional);
    ``"0"`` or ``"off"`` → 0, no limit. ValueError says what is accepted."""
    if raw.strip().lower() in ("off", "none"):
        return 0
    match = _SIZE.match(raw)
    if match is None:
        raise ValueError(
            f"{raw!r} is not a size: give bytes, or a number with K, M, G or T "
            "(e.g. 500M, 2G), or 0/off for no limit"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _env_byte_size(name: str, default: int) -> int:
    raw = os.environ.get(_PREFIX + name)
    if raw in (None, ""):
        return default
    try:
        return parse_byte_size(raw)
    except ValueError as error:
        raise SystemExit(f"{_PREFIX}{name}: {error}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(_PREFIX + name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{_PREFIX}{name}={raw!r} is not a boolean; use true or false")


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(_PREFIX + name)
    if raw in (None, ""):
        return default
    if raw.lower() not in choices:
        raise SystemExit(f"{_PREFIX}{name}={raw!r} is not one of {', '.join(choices)}")
    return raw.lower()


def _env_list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(_PREFIX + name) or ""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def read_token_file(path: str) -> str:
    """The admin token from a file (first line, stripped): unlike --token, it never
    shows in ``ps``. Refused: a file that others can read (it would leak the token), and
    one that another user owns (that user could choose the admin token, or read it).
    The checks and the read are of one descriptor, opened without blocking (a FIFO
    there cannot hang the start)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with open(fd, encoding="utf-8") as file:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise SystemExit(
                    f"timer-service: the token file {path} is not a regular file; give a file"
                )
            token = file.readline().strip()
    except OSError as error:
        raise SystemExit(
            f"timer-service: cannot read the token file {path}: {error.strerror}; check "
            "--token-file (or TIMER_SERVICE_TOKEN_FILE) names a file of this user, mode 600"
        ) from None
    except UnicodeDecodeError:
        raise SystemExit(f"timer-service: the token file {path} is not UTF-8 text") from None
    mode = status.st_mode
    if status.st_uid not in (0, os.geteuid()):
        raise SystemExit(
            f"timer-service: the token file {path} belongs to uid {status.st_uid}, who could "
            f"choose or read the admin token; as root run: chown {os.geteuid()} {path} && "
            f"chmod 600 {path}"
        )
    if mode & 0o077:
        raise SystemExit(
            f"timer-service: the token file {path} can be read by other users (mode "
            f"{mode & 0o777:o}); run: chmod 600 {path}"
        )
    if not token:
        raise SystemExit(
            f"timer-service: the token file {path} is empty; put the token on its first line"
        )
    return token


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    db_url: str = "sqlite:///./timer-service.db"
    fifo: str | None = None
    fifo_mode: int = 0o600
    # One FIFO per uid, DIR/<uid>, for jobs that do not run as the service's user.
    fifo_dir: str | None = None
    # Users (names or uids, comma-separated) whose FIFO is made at start.
    fifo_users: str | None = None
    token: str | None = None
    # Seconds after a non-SIGKILL signal before the worker gets SIGKILL (0: never).
    escalate_after: float = 10.0
    # Seconds after its SIGKILL a worker still alive is unkillable (0: not watched): it
    # gets an ``unkillable`` event, and timer_unkillable_workers counts it until it exits.
    unkillable_after: float = 10.0
    signal_children: bool = False
    # How long a write waits for its row to be committed before answering 202 (applied,
    # not recorded yet); it answers 202 at once when the database is known to be away.
    commit_timeout: float = 5.0
    # Events held in memory while the database cannot be written.
    recorder_buffer: int = 100_000
    # How long SQLite waits for a lock held by another connection before failing.
    db_busy_timeout: float = 5.0
    # How long the service keeps trying to reach its database at start (0: fail at once).
    db_wait: float = 0.0
    # Events (and ended timers) older than this are pruned; active timers never are.
    retention_days: float = 30.0
    prune_interval: float = 3600.0
    # A reaper loop silent this long is stalled: /healthz fails and the service exits
    # non-zero, so its supervisor (systemd) restarts it and the timers are re-armed.
    reaper_stall_seconds: float = 5.0
    # A due kill not sent within the stack budget plus this many seconds is overdue:
    # /healthz fails (503) and timer_kills_overdue says how many.
    overdue_margin: float = 1.0
    # Capture each expired worker's stack before signalling it, within this budget.
    capture_stacks: bool = True
    stack_budget: float = 2.0
    # py-spy needs ptrace rights over the workers; without it, /proc (or faulthandler).
    stack_py_spy: bool = True
    # Where the service makes each user's stack dump directory, <stack_dir>/<uid>. None:
    # /run/timer-service/stacks as root, else $XDG_RUNTIME_DIR/timer-service/stacks.
    stack_dir: str | None = None
    # One line per request in the log (uvicorn's access log); off by default.
    access_log: bool = False
    log_level: str = "info"
    # Also listen on this Unix socket; callers are identified by SO_PEERCRED.
    uds: str | None = None
    # Host headers this service answers to (DNS rebinding); empty: the bind address,
    # localhost, 127.0.0.1 and ::1.
    allowed_hosts: tuple[str, ...] = ()
    # Active timers one non-root uid may hold (each distinct pid also holds a pidfd).
    max_timers_per_user: int = 10_000
    # Arms and heartbeats one non-root uid may send per second, after a burst of ten
    # seconds' worth (0: none): each becomes rows, and the disk is everyone's.
    max_events_per_user_per_second: float = 200.0
    # The recorded history is kept below this many bytes, oldest pruned first (0: no
    # limit); how often it is measured.
    max_db_size: int = 8 << 30
    db_size_check_interval: float = 10.0
    # HTTP connections held at most (fewer if descriptors run short: kills come first).
    max_connections: int = 1000
    # Seconds a connection has to send each whole request; then it is closed (slowloris).
    request_timeout: float = 10.0
    # Connections one uid may hold (every non-local peer together counts as one user);
    # root and the service's uid are exempt.
    max_connections_per_user: int = 100
    # Seconds a response may sit in a connection's buffer with its client reading none
    # of it; then the connection is dropped and its buffer freed (app.access.unsent_data).
    send_timeout: float = 30.0
    # Bytes of responses all connections together may hold unread; over it, the ones
    # whose clients read nothing for longest are dropped first.
    max_unsent_bytes: int = 64 * 1024 * 1024
    # Served under this path prefix behind a reverse proxy (uvicorn's root_path).
    root_path: str = ""
    # Proxies trusted for X-Forwarded-For/-Proto (comma-separated); none by default.
    forwarded_allow_ips: str | None = None
    # This node's name on every timer it arms (contract 8/9); "" means the host name.
    node_name: str = ""
    # A job's expiries within this many seconds of its incident's opening join it.
    incident_window: float = 60.0
    # A node whose heartbeat is older than this many seconds is down (GET /nodes).
    node_timeout: float = 15.0
    # Serve the fleet's dashboard and reads only: no reaper, no FIFO; timer writes 409.
    hub: bool = False
    # The address people reach this service's pages at, for the links notifications
    # carry (contract 11); "": http://<host>:<port><root_path>.
    public_url: str = ""
    # Alertmanager's address (http(s)://host:9093): kills, incidents and unkillable
    # workers are posted there as alerts (contract 11); "": none.
    alertmanager_url: str = ""
    # Seconds a node holds a notification it is sending (contract 11): if it dies, another
    # node of the fleet (or its own restart) sends it once the lease has run out. Keep it
    # above a send's longest time (15 s), or a slow send may be repeated by another node.
    notify_lease: float = 60.0
    # Learned timeouts (contract 12): the least a suggested or learned timeout is, in
    # seconds (scheduling noise, a GC pause).
    auto_floor: float = 10.0
    # An "auto" timer's timeout until its job's scope has this many healthy holds.
    auto_initial_timeout: float = 600.0
    auto_min_samples: int = 20
    # Stragglers (contract 12): a rank whose median hold over its last window releases
    # of a scope is this many times the other ranks' gets a straggler event; at most
    # this many timer_rank_slowdown series.
    straggler_ratio: float = 1.2
    straggler_window: int = 20
    straggler_max_series: int = 100

    @property
    def page_url(self) -> str:
        """Where the links of notifications point: --public-url, else the bind address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.root_path}"

    @property
    def node(self) -> str:
        return self.node_name or socket.gethostname()

    def answered_hosts(self) -> tuple[str, ...]:
        """The Host header names accepted: the configured ones, else the defaults."""
        if self.allowed_hosts:
            return self.allowed_hosts
        return tuple(dict.fromkeys((self.host, "localhost", "127.0.0.1", "::1")))

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, overridden by the environment, overridden by non-None ``overrides``."""
        defaults = cls()
        settings = cls(
            host=_env_str("HOST", defaults.host) or defaults.host,
            port=_env_number("PORT", defaults.port, int),
            db_url=_env_str("DB_URL", defaults.db_url) or defaults.db_url,
            fifo=_env_str("FIFO", None),
            fifo_mode=_env_octal("FIFO_MODE", defaults.fifo_mode),
            fifo_dir=_env_str("FIFO_DIR", None),
            fifo_users=_env_str("FIFO_USERS", None),
            token=_env_str("TOKEN", None),
            escalate_after=_env_number("ESCALATE_AFTER", defaults.escalate_after, float),
            unkillable_after=_env_seconds("UNKILLABLE_AFTER", defaults.unkillable_after),
            signal_children=_env_bool("SIGNAL_CHILDREN", defaults.signal_children),
            commit_timeout=_env_number("COMMIT_TIMEOUT", defaults.commit_timeout, float),
            recorder_buffer=_env_number("RECORDER_BUFFER", defaults.recorder_buffer, int),
            db_busy_timeout=_env_number("DB_BUSY_TIMEOUT", defaults.db_busy_timeout, float),
            db_wait=_env_number("DB_WAIT", defaults.db_wait, float),
            retention_days=_env_number("RETENTION_DAYS", defaults.retention_days, float),
            prune_interval=_env_number("PRUNE_INTERVAL", defaults.prune_interval, float),
            reaper_stall_seconds=_env_number(
                "REAPER_STALL_SECONDS", defaults.reaper_stall_seconds, float
            ),
            overdue_margin=_env_number("OVERDUE_MARGIN", defaults.overdue_margin, float),
            capture_stacks=_env_bool("CAPTURE_STACKS", defaults.capture_stacks),
            stack_budget=_env_number("STACK_BUDGET", defaults.stack_budget, float),
            stack_py_spy=_env_bool("STACK_PY_SPY", defaults.stack_py_spy),
            stack_dir=_env_str("STACK_DIR", None),
            access_log=_env_bool("ACCESS_LOG", defaults.access_log),
            log_level=_env_choice("LOG_LEVEL", defaults.log_level, LOG_LEVELS),
            uds=_env_str("UDS", None),
            allowed_hosts=_env_list("ALLOWED_HOSTS"),
            max_timers_per_user=_env_number(
                "MAX_TIMERS_PER_USER", defaults.max_timers_per_user, int
            ),
            max_events_per_user_per_second=_env_number(
                "MAX_EVENTS_PER_USER_PER_SECOND", defaults.max_events_per_user_per_second, float
            ),
            max_db_size=_env_byte_size("MAX_DB_SIZE", defaults.max_db_size),
            db_size_check_interval=_env_number(
                "DB_SIZE_CHECK_INTERVAL", defaults.db_size_check_interval, float
            ),
            max_connections=_env_number("MAX_CONNECTIONS", defaults.max_connections, int),
            request_timeout=_env_number("REQUEST_TIMEOUT", defaults.request_timeout, float),
            max_connections_per_user=_env_number(
                "MAX_CONNECTIONS_PER_USER", defaults.max_connections_per_user, int
            ),
            send_timeout=_env_number("SEND_TIMEOUT", defaults.send_timeout, float),
            max_unsent_bytes=_env_number("MAX_UNSENT_BYTES", defaults.max_unsent_bytes, int),
            root_path=_env_str("ROOT_PATH", defaults.root_path) or defaults.root_path,
            forwarded_allow_ips=_env_str("FORWARDED_ALLOW_IPS", None),
            node_name=_env_str("NODE_NAME", defaults.node_name) or defaults.node_name,
            incident_window=_env_number("INCIDENT_WINDOW", defaults.incident_window, float),
            node_timeout=_env_number("NODE_TIMEOUT", defaults.node_timeout, float),
            hub=_env_bool("HUB", defaults.hub),
            public_url=_env_str("PUBLIC_URL", defaults.public_url) or defaults.public_url,
            alertmanager_url=_env_str("ALERTMANAGER_URL", "") or "",
            notify_lease=_env_number("NOTIFY_LEASE", defaults.notify_lease, float),
            auto_floor=_env_number("AUTO_FLOOR", defaults.auto_floor, float),
            auto_initial_timeout=_env_number(
                "AUTO_INITIAL_TIMEOUT", defaults.auto_initial_timeout, float
            ),
            auto_min_samples=_env_number("AUTO_MIN_SAMPLES", defaults.auto_min_samples, int),
            straggler_ratio=_env_number("STRAGGLER_RATIO", defaults.straggler_ratio, float),
            straggler_window=_env_number("STRAGGLER_WINDOW", defaults.straggler_window, int),
            straggler_max_series=_env_number(
                "STRAGGLER_MAX_SERIES", defaults.straggler_max_series, int
            ),
        )
        known = {field.name for field in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
