"""The flags of ``timer-service serve`` (and ``doctor``, which checks a host for a
service started with the same ones), and the settings they make."""

from __future__ import annotations

import argparse
import math
import os

from app.settings import LOG_LEVELS, Settings, parse_byte_size, read_token_file
from timer_core.engine.admission import MAX_DEADLINE_SECONDS

__all__ = ["add_serve_flags", "settings_from_args"]


def _byte_size(raw: str) -> int:
    try:
        return parse_byte_size(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds >= 0")
    return seconds


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """The flags of ``serve``, which ``doctor`` takes too: it checks the host for a
    service configured just so."""
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this host only)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--db-url", help="SQLAlchemy URL (default sqlite:///./timer-service.db, embedded)"
    )
    serve.add_argument(
        "--db-wait",
        type=float,
        metavar="SECONDS",
        help="keep trying to reach the database at start for this long (default 0: exit "
        "at once with what to check, for the supervisor to restart)",
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
    serve.add_argument(
        "--token",
        help="the admin token (every write must then carry 'Authorization: Bearer TOKEN'); "
        "visible to every user in ps: prefer --token-file or TIMER_SERVICE_TOKEN",
    )
    serve.add_argument(
        "--token-file", help="read the admin token from this file (mode 600), first line"
    )
    serve.add_argument(
        "--uds", help="also listen on this Unix socket (callers identified by SO_PEERCRED)"
    )
    serve.add_argument(
        "--allowed-hosts",
        help="comma-separated Host header names to answer to (default: the bind address, "
        "localhost, 127.0.0.1, ::1); '*' answers any (not safe with a browser on this host)",
    )
    serve.add_argument(
        "--max-timers-per-user",
        type=int,
        help="active timers one non-root user's processes may hold (default 10000)",
    )
    serve.add_argument(
        "--max-events-per-user-per-second",
        type=float,
        help="arms and heartbeats one non-root user's processes may send per second, "
        "after a burst of ten seconds' worth (default 200; 0: no limit); more get 429",
    )
    serve.add_argument(
        "--max-db-size",
        type=_byte_size,
        help="keep the recorded history below this size (bytes, or with K, M, G, T: "
        "e.g. 2G; default 8G; 0 or off: no limit) by pruning the oldest history first; "
        "when only active timers are left, new writes get 429",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="HTTP connections held at most (default 1000; fewer when file descriptors "
        "run short, so kills always have some)",
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        help="seconds a connection has to send each whole request before it is closed (default 10)",
    )
    serve.add_argument(
        "--max-connections-per-user",
        type=int,
        help="HTTP connections one user may hold (default 100; every caller from another "
        "host counts as one user; root and the service's user are exempt); more get 429",
    )
    serve.add_argument(
        "--send-timeout",
        type=float,
        help="seconds a response may wait with its client reading none of it before the "
        "connection is dropped (default 30)",
    )
    serve.add_argument(
        "--max-unsent-bytes",
        type=int,
        help="bytes of responses all connections together may hold unread (default "
        "67108864, 64 MiB); over it, the clients that read nothing for longest are dropped",
    )
    serve.add_argument(
        "--root-path",
        help="the path prefix a reverse proxy serves this under, e.g. /timer-service",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        help="comma-separated proxy addresses whose X-Forwarded-For/-Proto are trusted "
        "(default: none)",
    )
    serve.add_argument(
        "--escalate-after",
        type=float,
        help="seconds after a non-SIGKILL signal before SIGKILL (default 10; 0 disables)",
    )
    serve.add_argument(
        "--unkillable-after",
        type=_seconds,
        metavar="SECONDS",
        help="seconds after its SIGKILL a worker still alive is reported unkillable (an "
        "unkillable event, timer_unkillable_workers): stuck in the kernel, on NFS, FUSE or "
        "a driver (default 10; 0 disables)",
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
    serve.add_argument(
        "--node-name", help="this node's name on its timers and incidents (default: host name)"
    )
    serve.add_argument(
        "--incident-window",
        type=float,
        help="seconds after a job's incident opens in which its other expiries join it "
        "(default 60)",
    )
    serve.add_argument(
        "--node-timeout",
        type=float,
        help="seconds without a heartbeat after which GET /nodes says a node is down (default 15)",
    )
    serve.add_argument(
        "--hub",
        action="store_true",
        default=None,
        help="serve the fleet's dashboard and reads over a shared database: no reaper, "
        "no FIFO; timer writes get 409",
    )
    serve.add_argument(
        "--auto-floor",
        type=float,
        metavar="SECONDS",
        help="the least a suggested (GET /scopes) or learned (expires_in auto) timeout "
        "is (default 10)",
    )
    serve.add_argument(
        "--auto-initial-timeout",
        type=float,
        metavar="SECONDS",
        help='an "auto" timer\'s timeout until its scope has --auto-min-samples releases '
        "(default 600)",
    )
    serve.add_argument(
        "--auto-min-samples",
        type=int,
        metavar="N",
        help='releases of a job\'s scope before its "auto" timers use the learned timeout '
        "(default 20)",
    )
    serve.add_argument(
        "--straggler-ratio",
        type=float,
        metavar="RATIO",
        help="a rank whose median hold of a scope is this many times the other ranks' is a "
        "straggler (default 1.2)",
    )
    serve.add_argument(
        "--straggler-window",
        type=int,
        metavar="N",
        help="a rank's last N releases of a scope make its median hold (default 20)",
    )
    serve.add_argument(
        "--straggler-max-series",
        type=int,
        metavar="N",
        help="timer_rank_slowdown series at most (default 100)",
    )
    serve.add_argument(
        "--public-url",
        help="where people reach this service's pages, for the links in notifications "
        "(default http://HOST:PORT)",
    )
    serve.add_argument(
        "--alertmanager-url",
        help="also post kills, incidents and unkillable workers as alerts to this "
        "Alertmanager (its v2 API), e.g. http://127.0.0.1:9093",
    )
    serve.add_argument(
        "--notify-lease",
        type=float,
        metavar="SECONDS",
        help="how long a node holds a notification it is sending: if it dies, another node "
        "(or its restart) sends it after this (default 60; keep it above 15, a send's "
        "longest time)",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per HTTP request (off by default)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The service's settings from ``serve``'s flags over ``TIMER_SERVICE_*``, refused
    with one line (``SystemExit``) when a value cannot work."""
    token_file = args.token_file or os.environ.get("TIMER_SERVICE_TOKEN_FILE")
    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        db_url=args.db_url,
        db_wait=args.db_wait,
        fifo=args.fifo,
        fifo_dir=args.fifo_dir,
        fifo_users=args.fifo_users,
        token=read_token_file(token_file) if token_file else args.token,
        uds=args.uds,
        allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
        if args.allowed_hosts
        else None,
        max_timers_per_user=args.max_timers_per_user,
        max_events_per_user_per_second=args.max_events_per_user_per_second,
        max_db_size=args.max_db_size,
        max_connections=args.max_connections,
        request_timeout=args.request_timeout,
        max_connections_per_user=args.max_connections_per_user,
        send_timeout=args.send_timeout,
        max_unsent_bytes=args.max_unsent_bytes,
        root_path=args.root_path,
        forwarded_allow_ips=args.forwarded_allow_ips,
        escalate_after=args.escalate_after,
        unkillable_after=args.unkillable_after,
        signal_children=args.signal_children,
        capture_stacks=args.capture_stacks,
        stack_budget=args.stack_budget,
        stack_dir=args.stack_dir,
        log_level=args.log_level,
        access_log=args.access_log,
        node_name=args.node_name,
        incident_window=args.incident_window,
        node_timeout=args.node_timeout,
        hub=args.hub,
        public_url=args.public_url,
        alertmanager_url=args.alertmanager_url,
        notify_lease=args.notify_lease,
        auto_floor=args.auto_floor,
        auto_initial_timeout=args.auto_initial_timeout,
        auto_min_samples=args.auto_min_samples,
        straggler_ratio=args.straggler_ratio,
        straggler_window=args.straggler_window,
        straggler_max_series=args.straggler_max_series,
    )
    if not 0 <= settings.port <= 65535:
        raise SystemExit(f"--port {settings.port} is not a port: give 1-65535 (0: any free one)")
    if not 0 <= settings.auto_floor < float("inf"):
        raise SystemExit(f"--auto-floor {settings.auto_floor} is not a number of seconds >= 0")
    if not 0 < settings.auto_initial_timeout <= MAX_DEADLINE_SECONDS:
        raise SystemExit(
            f"--auto-initial-timeout {settings.auto_initial_timeout} is not a number of "
            f"seconds > 0 and <= {MAX_DEADLINE_SECONDS:g}"
        )
    if settings.auto_min_samples < 1:
        raise SystemExit(f"--auto-min-samples {settings.auto_min_samples} is not a count >= 1")
    if not 1 < settings.straggler_ratio < float("inf"):
        raise SystemExit(f"--straggler-ratio {settings.straggler_ratio} is not a ratio > 1")
    if settings.straggler_window < 1:
        raise SystemExit(f"--straggler-window {settings.straggler_window} is not a count >= 1")
    if not 0 < settings.notify_lease < float("inf"):
        raise SystemExit(f"--notify-lease {settings.notify_lease} is not a number of seconds > 0")
    if settings.straggler_max_series < 0:
        raise SystemExit(
            f"--straggler-max-series {settings.straggler_max_series} is not a count >= 0"
        )
    if settings.hub and (settings.fifo or settings.fifo_dir):
        raise SystemExit(
            "--hub runs no reaper and reads no FIFO: drop --fifo/--fifo-dir, and run a "
            "service without --hub on each worker node for them"
        )
    return settings
