"""Notifications (issue 23): how soon a kill reaches a webhook, and how fast the outbox
drains.

    python -m bench.notifications            # 40 kills; 1,000 incidents
    python -m bench.notifications --smoke    # 5 kills over 1 s; 100 incidents (CI keeps it working)

- **Delay, kill to receipt.** The real ``timer-service serve`` with one webhook channel
  to a receiver on loopback; sleeping workers are armed with deadlines spread over a
  few seconds and killed. Each delay is the receiver's clock at receipt minus the
  kill's time in the body (``at``, the event's own): the recorder's group commit, the
  outbox, the sender's wake and the HTTP post, end to end.
- **Outbox throughput.** In this process, a real recorder with its incident and outbox
  writers records ``--incidents`` hung jobs (one rank each: armed, captured, killed) on
  a fresh SQLite file: how long the writing takes. Then a real sender (its thread and
  its pool of four) delivers the incidents to the receiver: notifications a second,
  from its start to the last receipt.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.db.database import make_engine, migrate
from app.notify.sender import Sender
from bench.common import print_table, save, spawn_sleeper, summary_ms
from tests.app.notify.outbox_events import add_webhook, hung_job, recorder_for
from tests.app.notify.receiver import Receiver, start_receiver
from tests.app.service_process import ServiceProcess

SECRET = "a-secret-of-32-characters-------"
SPREAD_SECONDS = 3.0
SMOKE_SPREAD_SECONDS = 1.0  # 5 kills need no more


def kill_to_receipt(kills: int, spread: float, tmp: Path, receiver: Receiver) -> list[float]:
    service = ServiceProcess(tmp).start()
    workers = [spawn_sleeper() for _ in range(kills)]
    try:
        made = httpx.post(
            service.url + "/channels",
            json={"name": "bench", "url": receiver.url, "events": ["kill"], "secret": SECRET},
        )
        made.raise_for_status()
        for number, worker in enumerate(workers):
            httpx.post(
                service.url + "/timers",
                json={
                    "pid": worker.pid,
                    "scope_id": f"step-{number}",
                    "expires_in": 0.5 + spread * number / kills,
                },
            ).raise_for_status()
        got = receiver.wait_for(kills, timeout=30 + spread)
        if len(got) != kills:
            raise SystemExit(f"only {len(got)} of {kills} kills were told")
        return [item.at - float(item.json["at"]) for item in got]
    finally:
        service.stop()
        for worker in workers:
            worker.kill()
            worker.wait()


def outbox_throughput(incidents: int, tmp: Path, receiver: Receiver) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{tmp / 'outbox.db'}")
    migrate(engine)
    add_webhook(engine, receiver.url, SECRET)
    recorder, outbox = recorder_for(engine)
    started = time.perf_counter()
    for number in range(incidents):
        hung_job(recorder, job=f"job-{number}", first_seq=10 * number + 1, ranks=1)
    written = time.perf_counter() - started
    if outbox.written != incidents:
        raise SystemExit(f"{outbox.written} notifications written for {incidents} incidents")
    sender = Sender(engine, "bench", "http://bench")
    started = time.perf_counter()
    sender.start()
    try:
        got = receiver.wait_for(incidents, timeout=300)
    finally:
        sender.stop()
    sent = time.perf_counter() - started
    if len(got) != incidents or len({item.delivery_id for item in got}) != incidents:
        raise SystemExit(f"{len(got)} receipts for {incidents} incidents")
    engine.dispose()
    return {
        "incidents": incidents,
        "write_seconds": written,
        "written_per_second": incidents / written,
        "send_seconds": sent,
        "sent_per_second": incidents / sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--incidents", type=int, default=1000)
    args = parser.parse_args()
    kills, incidents = (5, 100) if args.smoke else (args.kills, args.incidents)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        receiver = start_receiver()
        try:
            spread = SMOKE_SPREAD_SECONDS if args.smoke else SPREAD_SECONDS
            delays = kill_to_receipt(kills, spread, tmp, receiver)
            receiver.got.clear()
            throughput = outbox_throughput(incidents, tmp, receiver)
        finally:
            receiver.close()
    delay = summary_ms(delays)
    print_table(
        "Kill to webhook receipt (real service, loopback receiver)",
        ["kills", "p50 ms", "p99 ms", "max ms"],
        [[delay["n"], delay["p50_ms"], delay["p99_ms"], delay["max_ms"]]],
    )
    print_table(
        "Outbox (SQLite, in process)",
        ["incidents", "written/s", "sent/s", "send s"],
        [
            [
                throughput["incidents"],
                throughput["written_per_second"],
                throughput["sent_per_second"],
                throughput["send_seconds"],
            ]
        ],
    )
    save(
        "notifications_smoke" if args.smoke else "notifications",
        {
            "command": "python -m bench.notifications" + (" --smoke" if args.smoke else ""),
            "delay": delay,
            "outbox": throughput,
        },
    )
    print(json.dumps({"delay": delay, "outbox": throughput}))


if __name__ == "__main__":
    main()
