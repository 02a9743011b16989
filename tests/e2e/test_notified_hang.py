"""A real torchrun job hangs and a person is told, once (issue 23, contract 11): torch
2.13 (CPU, gloo), 2 ranks on torch's own, unmodified ``FileTimerClient`` and the real
service's FIFO; rank 1 sleeps inside a step, rank 0 waits for it in all_reduce. Both
expire and are killed: one incident. A webhook receiver on loopback gets it once,
signed, naming rank 1; a real SMTP server (aiosmtpd) gets it once through the
notification library; the kills of both ranks are folded into it.

Needs root (py-spy attaches with ptrace) and the venv's torchrun.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.notify.receiver import Receiver, start_receiver, verified
from tests.app.notify.smtp_server import Mailbox, running_mailbox, text_of
from tests.app.service_process import ServiceProcess
from tests.e2e.torchrun_job import (
    captures_stacks,
    ended,
    job_command,
    job_env,
    needs_torchrun,
    start_job,
)

SECRET = "a-secret-of-32-characters-------"
STEP_SECONDS = 4.0

pytestmark = [pytest.mark.torch, *captures_stacks, needs_torchrun]

WORKER = """
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.elastic import timer

STEP_SECONDS = float(sys.argv[1])


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    timer.configure(timer.FileTimerClient(os.environ["TIMER_FIFO"]))
    dist.all_reduce(torch.ones(4))  # gloo's first collective connects: not timed
    for number in range(3):
        with timer.expires(after=STEP_SECONDS, scope="step"):
            if rank == 1 and number == 1:
                time.sleep(600)  # the hang
            dist.all_reduce(torch.ones(4))
    time.sleep(600)


if __name__ == "__main__":
    main()
"""


@pytest.fixture
def hook() -> Iterator[Receiver]:
    running = start_receiver()
    yield running
    running.close()


@pytest.fixture
def smtp_box() -> Iterator[Mailbox]:
    with running_mailbox() as box:
        yield box


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(
        tmp_path,
        "--fifo",
        str(tmp_path / "timers.fifo"),
        "--stack-budget",
        "10",
        "--public-url",
        "https://timers.example",
    ).start()
    yield running
    running.stop()


def add_channel(service: ServiceProcess, name: str, url: str, secret: str | None) -> None:
    body = {"name": name, "url": url, "events": ["kill", "incident"]}
    if secret:
        body["secret"] = secret
    answer = httpx.post(service.url + "/channels", json=body)
    assert answer.status_code == 201, answer.text


def test_a_hung_torchrun_job_is_told_once_by_webhook_and_email(
    tmp_path: Path, service: ServiceProcess, hook: Receiver, smtp_box: Mailbox
) -> None:
    receiver, mailbox = hook, smtp_box
    add_channel(service, "hook", receiver.url, SECRET)
    add_channel(service, "mail", mailbox.url(), None)
    job_id = f"notified-{uuid.uuid4().hex[:8]}"
    command = job_command(tmp_path, WORKER, job_id, 2, str(STEP_SECONDS))
    job = start_job(command, job_env(tmp_path / "timers.fifo"), tmp_path / "torchrun.log")
    ended(job, tmp_path / "torchrun.log", 90)  # once the service has killed its ranks
    (got,) = receiver.wait_for(1)
    (mail,) = mailbox.wait_for(1)
    time.sleep(1.0)  # anything sent twice would have come by now
    assert len(receiver.got) == 1 and len(mailbox.mail) == 1
    assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
    body = got.json
    assert (body["kind"], body["job_id"]) == ("incident", job_id)
    assert body["incident"]["suspects"] == [1], body
    assert "rank 1" in body["summary"], body["summary"]
    incident = httpx.get(service.url + f"/incidents/{body['incident']['id']}").json()
    assert body["url"] == f"https://timers.example/ui/incidents/{incident['id']}"
    assert mail["subject"].startswith("timer-service: incident on ")
    assert f"job {job_id} hung" in text_of(mail)
    # Both ranks' kills were folded into the incident, not told again.
    kills = httpx.get(service.url + "/events", params={"kind": "killed"}).json()["items"]
    assert len(kills) == 2
