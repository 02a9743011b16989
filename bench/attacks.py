"""Kill lateness under attack: the real ``timer-service``, a baseline and seven attacks.

    python -m bench.attacks            # 400 idle connections, 100k timers, 200k FIFO lines
    python -m bench.attacks --smoke    # 40 connections, 1k timers, 2k lines (CI keeps it working)

Each row starts a fresh service, sets its attack going, then arms probe workers
(``sleep`` processes) and reports how late each one died: from its deadline to its
death as seen by its parent (this process), the engine's own deadline-to-signal
latency from its ``killed`` event, how much of it the stack capture took (the
budget allows up to 2 s of it), and which method took each probe's stack ("stacks
by": the probes are ``sleep``, so /proc unless py-spy can read them). Ratios are
against the baseline row of the same run. ``overdue`` is the service's own count of
kills that went past the stack budget plus its margin (``timer_overdue_kills_total``).
The attacks:

- planted: a FIFO or a link to /etc/shadow at each probe's stack dump path;
- idle flood: the service under ``prlimit --nofile=256``, holding idle connections;
- 40 at once: 40 probes with the same deadline;
- readers: 4 clients polling ``/dashboard/state?scope=x`` over many timers;
- FIFO burst: torch-format requests written to the FIFO as fast as it takes them,
  while the probes' deadlines pass;
- capture-slot flood: a second user's workers whose captures hang, due with root's
  Python victim (the note says which method took the victim's stack);
- unread flood: a second user's connections (300), each asking for a page of timers
  with long scope ids and never reading it (tests/app/unread_flood.py); the note says
  the service's RSS before and at its peak, and /healthz's slowest answer meanwhile.

The smoke run takes its rows two at a time, each still on a service of its own: most
of a row is a service starting or a probe's deadline being waited for, and the smoke's
timings mean nothing (it checks what the rows count: every probe killed, its stack
taken, root's victim by py-spy, the unread flood's RSS). The full run takes one row at
a time, so that no row's timings include another's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    fifo_line,
    print_table,
    save,
    save_chart,
    side_by_side,
    summary_ms,
    write_fifo,
)
from tests.app.service_process import ServiceProcess

LEAD_SECONDS = 0.7  # from arming to the first deadline
SPREAD_SECONDS = 0.5  # deadlines spread over this, except for "40 at once"
GIVE_UP_SECONDS = 15.0  # a probe still alive this long after its deadline was missed
QUIET = ("--log-level", "warning")


@dataclass(frozen=True)
class Sizes:
    probes: int
    connections: int
    timers: int
    fifo_lines: int
    # Seconds from arming to the deadline when the readers start after arming.
    readers_lead: float
    simultaneous: int = 40
    # The unread flood: its connections, and the timers behind its pages.
    unread_connections: int = 300
    unread_timers: int = 1000
    # Room to arm the probes while the service serves the flood's pages.
    unread_lead: float = 10.0
    # Rows run side by side (each on its own service); 1 in the full run, which times.
    lanes: int = 1


FULL = Sizes(probes=20, connections=400, timers=100_000, fifo_lines=200_000, readers_lead=3.0)
SMOKE = Sizes(
    probes=5,
    connections=40,
    timers=1_000,
    fifo_lines=2_000,
    readers_lead=1.0,
    unread_connections=30,
    unread_timers=100,
    unread_lead=3.0,
    lanes=2,
)

Arm = Callable[[dict[int, float]], None]


def sleepers(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "900"]) for _ in range(count)]


def arm_http(url: str, **extra: Any) -> Arm:
    def arm(deadlines: dict[int, float]) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for pid, deadline in deadlines.items():
                body = {"pid": pid, "scope_id": "probe", "expiration_time": deadline, **extra}
                http.post("/timers", json=body).raise_for_status()

    return arm


def arm_fifo(fifo: str) -> Arm:
    return lambda deadlines: write_fifo(
        fifo, b"".join(fifo_line(pid, "probe", d) for pid, d in deadlines.items())
    )


def measure(
    service: ServiceProcess,
    count: int,
    arm: Arm,
    *,
    together: bool = False,
    note: str = "",
    lead: float = LEAD_SECONDS,
    after_arming: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Arm ``count`` probes with ``arm`` and time their deaths. ``after_arming`` starts
    an attack that would slow the arming itself: the lateness of the kill is measured,
    not that of the request. A probe armed only after its deadline is counted in
    ``armed_late`` (it fires at once, late by however long arming took)."""
    probes = sleepers(count)
    deaths: dict[int, float] = {}

    def watch(process: subprocess.Popen[bytes]) -> None:
        process.wait()
        deaths[process.pid] = time.time()

    watchers = [threading.Thread(target=watch, args=(p,), daemon=True) for p in probes]
    for thread in watchers:
        thread.start()
    start = time.time() + lead
    step = 0.0 if together else SPREAD_SECONDS / count
    deadlines = {p.pid: start + i * step for i, p in enumerate(probes)}
    try:
        arm(deadlines)
        armed_at = time.time()
        if after_arming is not None:
            after_arming()
        give_up = time.monotonic() + lead + SPREAD_SECONDS + GIVE_UP_SECONDS
        for thread in watchers:
            thread.join(max(0.0, give_up - time.monotonic()))
    finally:
        for probe in probes:
            if probe.poll() is None:
                probe.kill()
            probe.wait()
    died = [deaths[pid] - deadline for pid, deadline in deadlines.items() if pid in deaths]
    killed_by_service = {pid for pid, d in deaths.items() if d - deadlines[pid] < GIVE_UP_SECONDS}
    engine, capture, stacks = engine_latencies(service.url, killed_by_service)
    health = httpx.get(service.url + "/healthz", timeout=30).json()
    armed_late = sum(deadline < armed_at for deadline in deadlines.values())
    if armed_late:
        note = f"{note}; {armed_late} armed after their deadline".lstrip("; ")
    return {
        "probes": count,
        "missed": count - len(killed_by_service),
        "armed_late": armed_late,
        "death": summary_ms(died),
        "engine": summary_ms(engine),
        "capture": summary_ms(capture),
        "stacks": stacks,
        "overdue": health.get("kills", {}).get("overdue_total"),
        "note": note,
    }


def engine_latencies(
    url: str, pids: set[int], wait: float = 20.0
) -> tuple[list[float], list[float], dict[str, int]]:
    """Each probe's deadline-to-signal latency from its killed event (once recorded),
    how long its stack capture took (the part of the lateness the budget allows), and
    how many probes' stacks each method took: an attack may keep the kill on time
    and still cost root's evidence."""
    found: dict[int, float] = {}
    captures: dict[int, float] = {}
    methods: dict[int, str] = {}
    give_up = time.monotonic() + wait
    while time.monotonic() < give_up:
        with contextlib.suppress(httpx.HTTPError):
            page = httpx.get(url + "/events", params={"kind": "killed", "limit": 1000}, timeout=30)
            for event in page.json()["items"]:
                if event["pid"] in pids and "latency" in event["detail"]:
                    found[event["pid"]] = float(event["detail"]["latency"])
                    stack = event["detail"].get("stack")
                    captures[event["pid"]] = float(stack["seconds"]) if stack else 0.0
                    methods[event["pid"]] = stack["method"] if stack else "none"
        if len(found) >= len(pids):
            break
        time.sleep(0.2)
    counts: dict[str, int] = {}
    for method in methods.values():
        counts[method] = counts.get(method, 0) + 1
    return list(found.values()), list(captures.values()), counts


@contextlib.contextmanager
def service(tmp: Path, *extra: str, **options: Any) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp, *QUIET, *extra, **options).start()
    try:
        yield running
    finally:
        running.stop()


# ---- the rows ------------------------------------------------------------------------------


def baseline(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    with service(tmp) as running:
        return measure(running, sizes.probes, arm_http(running.url))


def planted(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    root = tmp / "stacks"
    with service(tmp, "--stack-dir", str(root)) as running:
        dump = {"dump_signal": int(signal.SIGUSR2)}
        first = arm_http(running.url, **dump)

        def arm(deadlines: dict[int, float]) -> None:
            first({pid: time.time() + 60 for pid in deadlines})  # makes the directory
            directory = root / str(os.getuid())
            for index, pid in enumerate(deadlines):
                path = directory / f"{pid}.stack"
                if index % 2:
                    os.symlink("/etc/shadow", path)
                else:
                    os.mkfifo(path)
            first(deadlines)  # a heartbeat moves each to its deadline

        return measure(running, sizes.probes, arm, note="half FIFOs, half links")


def idle_flood(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    if shutil.which("prlimit") is None:
        return {"skipped": "needs util-linux prlimit"}
    fifo = str(tmp / "timers.fifo")
    prefix = ("prlimit", "--nofile=256")
    with service(tmp, "--fifo", fifo, prefix=prefix) as running:
        flood: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(sizes.connections):
                try:
                    flood.append(socket.create_connection(("127.0.0.1", running.port), 5))
                except OSError:
                    refused += 1
            try:
                http = str(httpx.get(running.url + "/healthz", timeout=10).status_code)
            except httpx.HTTPError as error:
                http = type(error).__name__
            note = f"{sizes.connections} idle, {refused} refused; HTTP meanwhile: {http}"
            # Armed over the FIFO: the flood is on HTTP, and it is the kill that is timed.
            result = measure(running, sizes.probes, arm_fifo(fifo), note=note)
        finally:
            for sock in flood:
                sock.close()
        return result


def forty_at_once(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    with service(tmp) as running:
        arm = arm_http(running.url)
        # Room to arm all 40 before their one deadline.
        return measure(
            running, sizes.simultaneous, arm, together=True, note="one deadline", lead=1.5
        )


def bulk_timers(fifo: str, holder: int, count: int, prefix: str, deadline: float) -> None:
    write_fifo(fifo, b"".join(fifo_line(holder, f"{prefix}-{i}", deadline) for i in range(count)))


def readers(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    fifo = str(tmp / "timers.fifo")
    holder = subprocess.Popen(["sleep", "900"])
    with service(tmp, "--fifo", fifo) as running:
        try:
            bulk_timers(fifo, holder.pid, sizes.timers, "bulk", time.time() + 3600)
            wait_for_active(running.url, sizes.timers)
            stop = threading.Event()
            statuses: dict[str, int] = {}

            def poll() -> None:
                with httpx.Client(base_url=running.url, timeout=30) as http:
                    while not stop.is_set():
                        try:
                            code = str(
                                http.get("/dashboard/state", params={"scope": "x"}).status_code
                            )
                        except httpx.HTTPError as error:
                            code = type(error).__name__
                        statuses[code] = statuses.get(code, 0) + 1

            pollers = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
            began = time.monotonic()

            def start_readers() -> None:
                for thread in pollers:
                    thread.start()

            try:
                # Armed before the readers start, due while they poll.
                arm = arm_http(running.url)
                result = measure(
                    running, sizes.probes, arm, lead=sizes.readers_lead, after_arming=start_readers
                )
            finally:
                stop.set()
                for thread in pollers:
                    if thread.ident is not None:  # started
                        thread.join(30)
            rate = sum(statuses.values()) / (time.monotonic() - began)
            note = f"{sizes.timers} timers; 4 readers, {rate:.0f} req/s, {statuses}"
            result["note"] = f"{note}; {result['note']}" if result["note"] else note
            return result
        finally:
            holder.kill()
            holder.wait()


def wait_for_active(url: str, count: int, timeout: float = 300.0) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=30).json()["active_timers"] >= count:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the service never held {count} timers")


def fifo_burst(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    fifo = str(tmp / "timers.fifo")
    holder = subprocess.Popen(["sleep", "900"])
    with service(tmp, "--fifo", fifo) as running:
        written: list[float] = []

        def burst() -> None:
            began = time.monotonic()
            with contextlib.suppress(OSError):  # the service may stop first
                bulk_timers(fifo, holder.pid, sizes.fifo_lines, "burst", time.time() + 3600)
                written.append(time.monotonic() - began)

        def arm(deadlines: dict[int, float]) -> None:
            arm_http(running.url)(deadlines)  # armed first, then the burst over the deadlines
            threading.Thread(target=burst, daemon=True).start()

        try:
            result = measure(running, sizes.probes, arm)
            took = f"written in {written[0]:.1f}s" if written else "still being written"
            result["note"] = f"{sizes.fifo_lines} lines {took}"
            return result
        finally:
            holder.kill()
            holder.wait()


def capture_flood(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """12 workers of a second user, each in a mount namespace of its own with its
    library swapped for a FIFO, so that every capture of them hangs for the whole
    budget, fall due with the first probe and with a Python worker of root's: root's
    kills must keep their evidence (the probes are ``sleep``, so theirs is a /proc
    report; the Python victim's should be py-spy's)."""
    from tests.mount_namespace_worker import start_hostile, usable
    from tests.second_user import SecondUser, shared_dir
    from tests.workers import spawn_sleeper

    hung = 12  # more than the 8 capture slots
    if os.geteuid() != 0:
        return {"skipped": "needs root, to act as a second user"}
    user = SecondUser.named("timer-test-other")
    why = usable(user)
    if why:
        return {"skipped": why}
    with shared_dir() as reachable, service(tmp) as running:
        hostile = [
            start_hostile(user, reachable, name="libpython3.11.so", fifo_inside=True)
            for _ in range(hung)
        ]
        victim = spawn_sleeper()
        arm = arm_http(running.url)

        def arm_all(deadlines: dict[int, float]) -> None:
            first = min(deadlines.values())
            arm({**{worker.pid: first for worker in hostile}, victim.pid: first})
            arm(deadlines)

        try:
            # Room to arm the 13 others and the probes before the first deadline.
            result = measure(running, sizes.probes, arm_all, lead=3.0)
            victim.wait(GIVE_UP_SECONDS)
            events = httpx.get(
                running.url + "/events", params={"kind": "killed", "limit": 1000}, timeout=30
            ).json()["items"]
        finally:
            for worker in hostile:
                worker.stop()
            victim.kill()
            victim.wait()
        methods: dict[int, str] = {}
        for event in events:
            stack = event["detail"].get("stack")
            methods[event["pid"]] = stack["method"] if stack else "none"
        [latency] = [e["detail"]["latency"] for e in events if e["pid"] == victim.pid]
        others = {victim.pid, *(worker.pid for worker in hostile)}
        probes = [method for pid, method in methods.items() if pid not in others]
        result["victim"] = {"stack": methods[victim.pid], "latency_ms": latency * 1000}
        result["note"] = (
            f"{hung} hung captures of uid {user.uid}; root's Python victim: stack by "
            f"{methods[victim.pid]}, {latency * 1000:.0f} ms late; "
            f"{probes.count('none')} of {len(probes)} probes without a stack"
        )
        return result


def unread_flood(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """A second user's connections that each send ``GET /timers?limit=1000`` over
    timers with 4 KB scope ids, with a 4 KB receive buffer, and never read, held while
    root's probes fall due (issue 20: unbounded, 250 of them took 1.7 GB)."""
    from tests.e2e.test_unread_flood import ATTACK, rss_mb
    from tests.second_user import SYSTEM_PYTHON, SecondUser, readable_copy

    if os.geteuid() != 0:
        return {"skipped": "needs root, to act as a second user"}
    user = SecondUser.named("timer-test-other")
    script = str(readable_copy(ATTACK))  # the second user may not reach the checkout
    share = ("--max-connections-per-user", str(2 * sizes.unread_connections))
    with service(tmp, *share) as running:
        assert running.process is not None
        pid = running.process.pid

        def attack(*args: str) -> list[str]:
            where = ("127.0.0.1", str(running.port))
            return user.argv([SYSTEM_PYTHON, script, *where, *args])

        holder = user.sleeper()
        arm_timers = attack("arm", str(holder.pid), str(sizes.unread_timers))
        page = subprocess.run(arm_timers, capture_output=True, text=True, timeout=600, check=True)
        before = peak = rss_mb(pid)
        slowest_health = 0.0
        flood = subprocess.Popen(
            attack("flood", str(sizes.unread_connections)),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        done = threading.Event()

        def watch() -> None:
            nonlocal peak, slowest_health
            while not done.is_set():
                peak = max(peak, rss_mb(pid))
                started = time.monotonic()
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(running.url + "/healthz", timeout=30)
                slowest_health = max(slowest_health, time.monotonic() - started)
                done.wait(0.3)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            time.sleep(1.0)  # the connections are open and their pages asked for
            arm = arm_http(running.url)
            result = measure(running, sizes.probes, arm, lead=sizes.unread_lead)
            events = httpx.get(
                running.url + "/events", params={"kind": "killed", "limit": 1000}, timeout=30
            ).json()["items"]
        finally:
            done.set()
            watcher.join()
            flood.communicate()
            holder.kill()
            holder.wait()
    methods = sorted({(e["detail"].get("stack") or {}).get("method", "none") for e in events})
    result["victim"] = {"stack": "/".join(methods), "latency_ms": result["engine"]["p50_ms"]}
    result["rss_mb"] = {"before": round(before), "peak": round(peak)}
    result["note"] = (
        f"{sizes.unread_connections} unread connections of uid {user.uid}, pages of "
        f"{int(page.stdout) // 1024} KiB; RSS {before:.0f} -> {peak:.0f} MB; /healthz "
        f"slowest {slowest_health:.1f} s; root's stacks by {'/'.join(methods)}"
    )
    return result


ROWS: dict[str, Callable[[Sizes, Path], dict[str, Any]]] = {
    "baseline": baseline,
    "planted FIFO + link": planted,
    "idle flood, 256 fds": idle_flood,
    "40 at once": forty_at_once,
    "4 dashboard readers": readers,
    "FIFO burst": fifo_burst,
    "capture-slot flood": capture_flood,
    "unread flood": unread_flood,
}


def run_rows(sizes: Sizes) -> list[dict[str, Any]]:
    """Every row, ``sizes.lanes`` at a time, each in a fresh directory; in ROWS' order."""

    def run(name: str) -> dict[str, Any]:
        print(f"  {name} ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            return {"attack": name, **ROWS[name](sizes, Path(tmp))}

    return side_by_side(run, ROWS, sizes.lanes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, a few probes")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    results = run_rows(sizes)
    base = results[0]["death"]["p50_ms"]
    table = []
    for r in results:
        if "skipped" in r:
            table.append([r["attack"], *["-"] * 10, r["skipped"]])
            continue
        r["p50_ratio"] = r["death"]["p50_ms"] / base if base else float("nan")
        death, engine = r["death"], r["engine"]
        table.append(
            [
                r["attack"],
                r["probes"],
                r["missed"],
                death["p50_ms"],
                death["p99_ms"],
                death["max_ms"],
                engine["p50_ms"],
                r["capture"]["p50_ms"],
                " ".join(f"{m}:{n}" for m, n in sorted(r["stacks"].items())),
                round(r["p50_ratio"], 2),
                r["overdue"],
                r["note"],
            ]
        )
    print_table(
        "Kill lateness under attack: deadline to worker death (ms), real service",
        [
            "attack",
            "probes",
            "missed",
            "p50",
            "p99",
            "max",
            "engine p50",
            "capture p50",
            "stacks by",
            "x base",
            "overdue",
            "note",
        ],
        table,
    )
    name = "attacks_smoke" if args.smoke else "attacks"
    save(name, {"sizes": sizes.__dict__, "rows": results})
    measured = [r for r in results if "skipped" not in r]
    save_chart(
        name,
        "Kill lateness under attack, deadline to death (ms)",
        [r["attack"] for r in measured],
        {
            "p50": [r["death"]["p50_ms"] for r in measured],
            "max": [r["death"]["max_ms"] for r in measured],
        },
        "ms",
    )


if __name__ == "__main__":
    main()
