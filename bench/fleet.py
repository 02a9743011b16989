"""Fleet mode at scale, on one PostgreSQL: events/s that N node services record end to
end in total, fed by torch's own FileTimerClient, with zero lost; and the latency of
``GET /timers?job=`` and ``GET /incidents`` over tables of 1M and 10M rows.

    python -m bench.fleet                  # N = 1, 2, 4; 4 clients a node; 10 s; 3 rounds
    python -m bench.fleet --smoke          # N = 1, 0.3 s, 1 round; reads at 10k rows (CI)
    python -m bench.fleet --only write     # or --only read
    python -m bench.fleet --postgres "host=/var/run/postgresql user=postgres"

Write rounds. Every round gets a fresh database on the server (created, then dropped
with FORCE at the end). N real ``timer-service serve`` processes (``--node-name
node-i --fifo ... --no-capture-stacks``) share it; each is fed by its own client
processes, each labelled as torchrun labels a rank (TORCHELASTIC_RUN_ID, RANK,
LOCAL_RANK, WORLD_SIZE) and each doing torch's ``acquire`` + ``release`` as fast as it
can for the round's duration, every pair on a scope of its own. A client that finds
the pipe full (torch's client then raises) counts it and retries the same request.
Then the bench waits for the services to drain and checks, in SQL, that every pair
every client sent has its ``acquired`` and ``released`` events in the table: the rate
is those events over the time from the clients' start to the moment the last was
counted. The CPU each group used (clients, services, PostgreSQL's processes) is read
from /proc over the round.

Read rounds. A fresh database is migrated (as a service does at its start, by this
process: no service runs twice), then filled straight in SQL
(``INSERT ... SELECT generate_series``): timers of 16 nodes, 8 jobs at a time of ~8,000
timers each, mostly released, 0.1 % expired, the newest active; one event a timer; and
a few thousand incidents with 8 ranks' captures each. One service then answers the
reads: ``/timers?job=`` for the newest and the oldest job, ``/incidents`` and
``/incidents?job=``; medians and p99 of many sequential requests.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import (
    RESULTS,
    cpu_seconds,
    print_table,
    python,
    save,
    summary_ms,
    wait_for_reader,
)
from tests.app.service_process import ServiceProcess

# One worker: torch's FileTimerClient, acquire + release on a scope of its own per pair.
CLIENT = """
import os, sys, time
from torch.distributed.elastic.timer import FileTimerClient
fifo, seconds = sys.argv[1], float(sys.argv[2])
from bench.fifo_sender import Sender
client = FileTimerClient(fifo)
send = Sender(pause=0.0005)

print("ready", flush=True)
sys.stdin.readline()  # the starting gun
stop = time.monotonic() + seconds
pairs = 0
while time.monotonic() < stop:
    scope = f"s{pairs}"
    send(client.acquire, scope, time.time() + 600)
    send(client.release, scope)
    pairs += 1
print(pairs, send.full, flush=True)
sys.stdin.readline()
"""

NODES_IN_FILL = 16
TIMERS_PER_JOB = 8_000
JOBS_AT_ONCE = 8
RANKS = 64


@contextmanager
def fresh_database(params: dict[str, Any]) -> Iterator[str]:
    """A new database on the server (dropped at the end, even with services still on
    it); yields its ``postgresql+psycopg://`` URL."""
    import psycopg
    from psycopg import sql

    from tests.postgres import PostgresDatabase

    name = f"timer_fleet_{secrets.token_hex(4)}"
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        for attempt in range(50):
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                break
            except psycopg.errors.ObjectInUse:
                # "source database template1 is being accessed by other users": another
                # CREATE DATABASE (a test's, a bench's) is copying it at this instant.
                if attempt == 49:
                    raise
                time.sleep(0.1)
        try:
            yield PostgresDatabase(params, name).url()
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def server_params(conninfo: str | None) -> dict[str, Any]:
    """libpq keywords of a role that may create databases: ``conninfo``, or this
    machine's server on its socket as postgres, then root."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    candidates: list[dict[str, Any]] = (
        [dict(conninfo_to_dict(conninfo))]
        if conninfo
        else [{"host": "/var/run/postgresql", "user": user} for user in ("postgres", "root")]
    )
    for params in candidates:
        params.pop("dbname", None)
        try:
            psycopg.connect(**params, dbname="postgres", connect_timeout=3).close()
            return params
        except psycopg.Error:
            continue
    raise SystemExit("no PostgreSQL reachable: pass --postgres 'host=... user=...'")


def sql_value(params: dict[str, Any], url: str, query: str) -> Any:
    import psycopg

    dbname = url.rsplit("/", 1)[1].split("?", 1)[0]
    with psycopg.connect(**params, dbname=dbname, autocommit=True) as connection:
        row = connection.execute(query.encode()).fetchone()
        return None if row is None else row[0]


def start_node(workdir: Path, url: str, name: str, *extra: str) -> ServiceProcess:
    service = ServiceProcess(workdir, "--node-name", name, "--no-capture-stacks", *extra)
    service.db_url = url
    return service.start()


def close(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def postgres_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            found.append(process)
    return found


def group_cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with suppress(psutil.Error):
            total += cpu_seconds(process)
    return total


def stop_all(services: list[ServiceProcess], workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        close(worker)
    for service in services:
        service.stop()


def write_round(
    params: dict[str, Any], nodes: int, clients: int, seconds: float, drain_timeout: float
) -> dict[str, Any]:
    """One round: N services on a fresh database, ``clients`` workers each, for
    ``seconds``; every pair checked in the database."""
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = stack.enter_context(fresh_database(params))
        services: list[ServiceProcess] = []
        workers: list[subprocess.Popen[str]] = []
        stack.callback(stop_all, services, workers)
        workdirs = [Path(tmp) / f"node-{node}" for node in range(nodes)]
        # The clients first: they import torch while the services start (a client opens
        # its FIFO only at its first request, after the starting gun).
        for node, workdir in enumerate(workdirs):
            workdir.mkdir()
            for local in range(clients):
                labels = {
                    "TORCHELASTIC_RUN_ID": "bench-fleet",
                    "RANK": str(node * clients + local),
                    "LOCAL_RANK": str(local),
                    "WORLD_SIZE": str(nodes * clients),
                }
                fifo = str(workdir / "timers.fifo")
                workers.append(python(CLIENT, fifo, str(seconds), env=labels))
        for node, workdir in enumerate(workdirs):
            fifo = str(workdir / "timers.fifo")
            services.append(start_node(workdir, url, f"node-{node}", "--fifo", fifo))
            wait_for_reader(fifo)
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        postgres = postgres_processes()
        groups = {
            "clients": [psutil.Process(worker.pid) for worker in workers],
            "services": [psutil.Process(s.process.pid) for s in services if s.process],
            "postgres": postgres,
        }
        cpu_before = {name: group_cpu(members) for name, members in groups.items()}
        started = time.monotonic()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [worker.stdout.readline().split() for worker in workers if worker.stdout]
        if any(len(report) != 2 for report in reports):
            raise RuntimeError("a client process failed; see its traceback above")
        sent_at = time.monotonic()
        pairs = sum(int(report[0]) for report in reports)
        pipe_full = sum(int(report[1]) for report in reports)
        expected = 2 * pairs
        count = "SELECT count(*) FROM events WHERE kind IN ('acquired', 'released')"
        recorded, done_at = 0, sent_at
        deadline = sent_at + drain_timeout
        while time.monotonic() < deadline:
            recorded = int(sql_value(params, url, count))
            done_at = time.monotonic()
            if recorded >= expected:
                break
            time.sleep(0.1)
        cpu = {name: group_cpu(members) - cpu_before[name] for name, members in groups.items()}
        # Every pair each client sent: its scope acquired and released, once or more
        # (torch's client can raise after its line went through; the retry repeats it).
        complete = int(
            sql_value(
                params,
                url,
                "SELECT count(*) FROM (SELECT pid, scope_id FROM events"
                " WHERE kind IN ('acquired', 'released') GROUP BY pid, scope_id"
                " HAVING count(DISTINCT kind) = 2) AS pairs",
            )
        )
        labelled = int(
            sql_value(params, url, "SELECT count(*) FROM timers WHERE job_id = 'bench-fleet'")
        )
        # What a row costs on disk as the services write it: table, TOAST and indexes.
        sizes = {
            table: int(sql_value(params, url, f"SELECT pg_total_relation_size('{table}')"))
            / max(1, int(sql_value(params, url, f"SELECT count(*) FROM {table}")))
            for table in ("events", "timers")
        }
    elapsed = done_at - started
    return {
        "nodes": nodes,
        "clients": nodes * clients,
        "pairs_sent": pairs,
        "events_expected": expected,
        "events_recorded": recorded,
        "pairs_complete": complete,
        "timers_labelled": labelled,
        "lost": max(0, pairs - complete),
        "events_per_s": recorded / elapsed,
        "sent_per_s": expected / (sent_at - started),
        "drain_s": done_at - sent_at,
        "pipe_full_retries": pipe_full,
        "cpu_s": cpu,
        "bytes_per_row": sizes,
        "seconds": elapsed,
    }


def fill(params: dict[str, Any], url: str, rows: int, incidents: int) -> float:
    """``rows`` timers and as many events, ``incidents`` incidents of 8 captures each,
    straight in SQL; returns the seconds it took."""
    import psycopg

    started = time.monotonic()
    base_ms = int(time.time() * 1000) - 1_767_225_600_000 - rows  # one a millisecond
    at0 = time.time() - rows / 1000
    dbname = url.rsplit("/", 1)[1].split("?", 1)[0]
    per_block = TIMERS_PER_JOB * JOBS_AT_ONCE
    job = f"'job-' || ((g / {per_block}) * {JOBS_AT_ONCE} + g % {JOBS_AT_ONCE})"
    statements = [
        f"""
        INSERT INTO timers (id, pid, scope_id, signal, source, state, acquired_at,
            expiration_time, ended_at, end_reason, process_create_time, uid, node,
            job_id, rank, local_rank, world_size)
        SELECT ((({base_ms} + g)::bigint) << 12) | ((g % {NODES_IN_FILL}) << 2),
            10000 + g % 30000, 'train-step', 9, 'fifo',
            CASE WHEN g > {rows} - 512 THEN 'active'
                 WHEN g % 1000 = 0 THEN 'expired' ELSE 'released' END,
            {at0} + g / 1000.0, {at0} + g / 1000.0 + 600,
            CASE WHEN g > {rows} - 512 THEN NULL ELSE {at0} + g / 1000.0 + 0.5 END,
            CASE WHEN g > {rows} - 512 THEN NULL
                 WHEN g % 1000 = 0 THEN 'killed' ELSE 'released' END,
            1.0, 1000, 'node-' || (g % {NODES_IN_FILL}), {job},
            (g / {JOBS_AT_ONCE}) % {RANKS}, (g / {JOBS_AT_ONCE}) % 8, {RANKS}
        FROM generate_series(1, {rows}) AS g
        """,
        """
        INSERT INTO events (timer_id, kind, at, pid, scope_id, source, detail, node)
        SELECT id, CASE state WHEN 'active' THEN 'acquired' ELSE end_reason END,
            coalesce(ended_at, acquired_at), pid, scope_id, source, '{}', node
        FROM timers
        """,
        f"""
        INSERT INTO jobs (job_id, world_size, first_seen, last_seen, incidents)
        SELECT job_id, {RANKS}, min(acquired_at), max(acquired_at), 0
        FROM timers GROUP BY job_id
        """,
        f"""
        INSERT INTO incidents (job_id, opened_at, node, trigger_timer_id, suspects,
            summary, groups, nodes)
        SELECT t.job_id, t.ended_at, t.node, t.id, '[3]', 'rank 3 of 8 differs', '[]',
            '["node-0", "node-1"]'
        FROM (SELECT * FROM timers WHERE state = 'expired' ORDER BY id
              LIMIT {incidents}) AS t ORDER BY t.id
        """,
        """
        INSERT INTO incident_captures (incident_id, node, pid, uid, rank, local_rank,
            timer_id, outcome, group_number, expired_at, captured_at, stack_method,
            stack_text)
        SELECT i.id, 'node-' || (r % 2), 20000 + r, 1000, r, r, NULL, 'captured',
            CASE WHEN r = 3 THEN 2 ELSE 1 END, i.opened_at, i.opened_at + 0.2, 'py-spy',
            'Thread 1 (idle): "MainThread"\n    all_reduce (torch/distributed.py:2000)'
        FROM incidents AS i, generate_series(0, 7) AS r
        """,
        "UPDATE jobs SET incidents = n FROM (SELECT job_id AS j, count(*) AS n"
        " FROM incidents GROUP BY job_id) AS c WHERE jobs.job_id = c.j",
    ]
    with psycopg.connect(**params, dbname=dbname, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement.encode())
        connection.execute(b"VACUUM ANALYZE")
    return time.monotonic() - started


def migrate_schema(url: str) -> None:
    """The schema a service would make at its start, made by this process."""
    from app.db.database import make_engine, migrate

    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def time_gets(client: httpx.Client, path: str, requests: int) -> dict[str, float]:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - began)
        answer.raise_for_status()
    return summary_ms(times)


def read_round(params: dict[str, Any], rows: int, incidents: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(params) as url:
        migrate_schema(url)  # then filled with nobody writing
        print(f"  filling {rows:,} timers + events, {incidents:,} incidents ...", flush=True)
        fill_s = fill(params, url, rows, incidents)
        size = int(sql_value(params, url, "SELECT pg_database_size(current_database())"))
        newest = sql_value(params, url, "SELECT job_id FROM timers ORDER BY id DESC LIMIT 1")
        oldest = sql_value(params, url, "SELECT job_id FROM timers ORDER BY id LIMIT 1")
        with_incidents = sql_value(
            params, url, "SELECT job_id FROM incidents ORDER BY id DESC LIMIT 1"
        )
        service = start_node(Path(tmp), url, "node-0")
        try:
            paths = {
                "/timers?job=<newest job>": f"/timers?job={newest}",
                "/timers?job=<oldest job>": f"/timers?job={oldest}",
                "/incidents": "/incidents",
                "/incidents?job=": f"/incidents?job={with_incidents}",
            }
            with httpx.Client(base_url=service.url, timeout=60) as client:
                latency = {name: time_gets(client, path, requests) for name, path in paths.items()}
        finally:
            service.stop()
    return {
        "rows": rows,
        "incidents": incidents,
        "fill_s": fill_s,
        "database_bytes": size,
        "latency": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="N=1, 0.3 s, 1 round, 10k rows")
    parser.add_argument("--nodes", default="1,2,4", help="comma-separated N (default 1,2,4)")
    parser.add_argument("--clients", type=int, default=4, help="client processes a node")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated table sizes")
    parser.add_argument("--incidents", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300, help="GETs timed per path")
    parser.add_argument("--only", choices=["write", "read"])
    parser.add_argument("--postgres", help="libpq connection string (default: local socket)")
    args = parser.parse_args()
    if args.smoke:
        # 0.3 s of sending is thousands of pairs, each checked; the drain is most of a round.
        args.nodes, args.clients, args.seconds, args.rounds = "1", 2, 0.3, 1
        args.rows, args.incidents, args.requests = "10000", 20, 20
    params = server_params(args.postgres)
    payload: dict[str, Any] = {"clients_per_node": args.clients, "seconds": args.seconds}

    if args.only != "read":
        rows = []
        for nodes in [int(n) for n in args.nodes.split(",")]:
            rounds = []
            for number in range(args.rounds):
                print(f"  N={nodes}, round {number + 1}/{args.rounds} ...", flush=True)
                rounds.append(write_round(params, nodes, args.clients, args.seconds, 120.0))
            rates = [r["events_per_s"] for r in rounds]
            rows.append(
                {
                    "nodes": nodes,
                    "clients": nodes * args.clients,
                    "median_events_per_s": statistics.median(rates),
                    "events_per_s": rates,
                    "median_sent_per_s": statistics.median(r["sent_per_s"] for r in rounds),
                    "median_drain_s": statistics.median(r["drain_s"] for r in rounds),
                    "lost": sum(r["lost"] for r in rounds),
                    "rounds": rounds,
                }
            )
        print_table(
            f"Fleet writes: events/s recorded in total ({args.clients} torch clients a node, "
            f"{args.seconds:g} s, medians of {args.rounds})",
            ["nodes", "clients", "events/s", "min", "max", "sent/s", "drain s", "lost"],
            [
                [
                    row["nodes"],
                    row["clients"],
                    round(row["median_events_per_s"]),
                    round(min(row["events_per_s"])),
                    round(max(row["events_per_s"])),
                    round(row["median_sent_per_s"]),
                    row["median_drain_s"],
                    row["lost"],
                ]
                for row in rows
            ],
        )
        print("CPU seconds a round (clients / services / postgres):")
        for row in rows:
            for r in row["rounds"]:
                cpu = r["cpu_s"]
                print(
                    f"  N={row['nodes']}: {cpu['clients']:.1f} / {cpu['services']:.1f}"
                    f" / {cpu['postgres']:.1f} over {r['seconds']:.1f} s"
                )
        payload["writes"] = rows

    if args.only != "write":
        reads = []
        for size in [int(n) for n in args.rows.split(",")]:
            reads.append(read_round(params, size, args.incidents, args.requests))
        print_table(
            f"Reads against one service, {args.requests} sequential GETs each (ms)",
            ["rows", "path", "p50", "p99", "max"],
            [
                [f"{read['rows']:,}", path, stats["p50_ms"], stats["p99_ms"], stats["max_ms"]]
                for read in reads
                for path, stats in read["latency"].items()
            ],
        )
        payload["reads"] = reads

    name = "fleet_smoke" if args.smoke else "fleet"
    previous = RESULTS / f"{name}.json"
    if args.only and previous.exists():  # keep the other half of the last full run
        kept = json.loads(previous.read_text())
        payload = {**{k: kept[k] for k in ("writes", "reads") if k in kept}, **payload}
    save(name, payload)


if __name__ == "__main__":
    main()
