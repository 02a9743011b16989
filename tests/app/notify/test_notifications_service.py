"""Notifications from the real ``timer-service`` process (contract 11): a real kill
reaches a real receiver signed, only the admin (as the kernel tells who calls) may add
a channel, and a notification survives the receiver being down and the service being
SIGKILLed, arriving after the restart with the delivery id it had before."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.notify.receiver import Receiver, start_receiver, verified
from tests.app.service_process import ServiceProcess, ask_as, scraped
from tests.second_user import SERVICE_AS_ROOT, SecondUser
from tests.waiting import wait_until
from tests.workers import assert_sigkilled

SECRET = "a-secret-of-32-characters-------"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path, "--public-url", "https://timers.example").start()
    yield running
    running.stop()


def add_channel(service: ServiceProcess, url: str) -> dict[str, Any]:
    answer = httpx.post(
        service.url + "/channels",
        json={"name": "ops", "url": url, "events": ["kill"], "secret": SECRET},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def arm(service: ServiceProcess, pid: int, expires_in: float) -> dict[str, Any]:
    answer = httpx.post(
        service.url + "/timers", json={"pid": pid, "scope_id": "step", "expires_in": expires_in}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_a_real_kill_reaches_the_receiver_signed_and_counted(
    service: ServiceProcess, receiver: Receiver, sleeper: subprocess.Popen[bytes]
) -> None:
    add_channel(service, receiver.url)
    timer = arm(service, sleeper.pid, 0.2)
    assert_sigkilled(sleeper)
    (got,) = receiver.wait_for(1)
    assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
    body = got.json
    assert (body["kind"], body["timer"]["id"], body["timer"]["pid"]) == (
        "kill",
        timer["id"],
        sleeper.pid,
    )
    assert body["url"] == f"https://timers.example/ui/timers/{timer['id']}"
    assert wait_until(
        lambda: scraped(service.url, "timer_notifications_total", state="delivered") == 1
    )
    assert scraped(service.url, "timer_notification_queue") == 0
    (delivery,) = httpx.get(service.url + "/deliveries").json()["items"]
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)
    assert delivery["delivery_id"] == got.delivery_id
    assert SECRET not in service.log() and "/hook" not in service.log()


def test_another_user_may_not_add_a_channel_nor_silence_roots_work(
    service: ServiceProcess, receiver: Receiver, sleeper: subprocess.Popen[bytes]
) -> None:
    for mark in SERVICE_AS_ROOT:
        if mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    other = SecondUser.named("ts-caller")
    target = service.url.replace("http://", "tcp://")
    status, answer = ask_as(
        other,
        target,
        "POST",
        "/channels",
        {"name": "x", "url": "http://169.254.169.254/", "events": ["kill"]},
    )
    assert status == 403, answer
    assert f"uid {other.uid}" in answer["detail"]
    assert httpx.get(service.url + "/channels").json()["items"] == []
    # The user's silence of every "step" scope is its own uid's: root's kill still goes.
    window = {"match": {"scope_prefix": "step"}, "ends_at": time.time() + 600, "comment": "x"}
    status, made = ask_as(other, target, "POST", "/silences", window)
    assert status == 201, made
    assert made["match"]["uid"] == other.uid
    status, answer = ask_as(other, target, "POST", "/silences", {**window, "match": {"uid": 0}})
    assert status == 403, answer
    add_channel(service, receiver.url)
    arm(service, sleeper.pid, 0.2)
    assert_sigkilled(sleeper)
    (got,) = receiver.wait_for(1)
    assert got.json["kind"] == "kill"


def test_a_notification_outlives_a_dead_receiver_and_a_sigkilled_service(
    service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    down = start_receiver()
    port = down.port
    down.close()  # the receiver is down: connections are refused
    add_channel(service, f"http://127.0.0.1:{port}/hook")
    arm(service, sleeper.pid, 0.2)
    assert_sigkilled(sleeper)

    def tried() -> dict[str, Any] | None:
        items = httpx.get(service.url + "/deliveries").json()["items"]
        return items[0] if items and items[0]["attempts"] >= 1 else None

    assert wait_until(lambda: tried() is not None)
    before = tried()
    assert before is not None and before["state"] == "pending", before
    service.crash()
    receiver = start_receiver(port)
    try:
        service.start()
        (got,) = receiver.wait_for(1, timeout=20)
        assert got.delivery_id == before["delivery_id"]
        assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
        assert wait_until(lambda: (tried() or {}).get("state") == "delivered")
        after = tried()
        assert after is not None and after["delivery_id"] == before["delivery_id"]
        assert after["attempts"] == before["attempts"] + 1
        assert len(receiver.got) == 1
    finally:
        receiver.close()


def test_a_send_cut_by_a_sigkill_goes_again_at_the_restart_with_its_id(
    tmp_path: Path, receiver: Receiver, sleeper: subprocess.Popen[bytes]
) -> None:
    """The service dies while its request waits for the receiver's answer: its new
    process (holding the node's lock, so the old one is dead) sends it again at start
    with the same delivery id, not after the lease (600 s here) runs out."""
    service = ServiceProcess(tmp_path, "--notify-lease", "600").start()
    try:
        receiver.hold()
        add_channel(service, receiver.url)
        timer = arm(service, sleeper.pid, 0.2)
        assert_sigkilled(sleeper)
        (cut,) = receiver.wait_for(1)
        service.crash()
        receiver.release()
        service.start()
        first, again = receiver.wait_for(2, timeout=20)
        assert first is cut
        assert again.delivery_id == cut.delivery_id
        assert again.json["timer"]["id"] == timer["id"]
        assert verified(SECRET, again.headers["x-timer-service-signature"], again.body)
        assert wait_until(
            lambda: (
                [
                    (item["delivery_id"], item["state"])
                    for item in httpx.get(service.url + "/deliveries").json()["items"]
                ]
                == [(cut.delivery_id, "delivered")]
            )
        )
        assert "sent again" in service.log()
    finally:
        service.stop()
