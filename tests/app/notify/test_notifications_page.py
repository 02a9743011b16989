"""``/ui/notifications``: the channels, recent deliveries and silences (contract 11),
rendered as text, the URL as scheme and host only; and in real headless Chromium
against the real service, a real kill's delivery as it went."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page

from tests.app.notify.outbox_events import lone_kill, recorder_for
from tests.app.notify.receiver import Receiver
from tests.app.service_process import ServiceProcess
from tests.conftest import service_of
from tests.waiting import wait_until
from tests.workers import assert_sigkilled

SECRET = "a-secret-of-32-characters-------"
HOSTILE = '<img src=x onerror="alert(1)">'


def test_an_empty_page_says_what_to_do(client: TestClient) -> None:
    page = client.get("/ui/notifications")
    assert page.status_code == 200
    assert "No channel: nobody is told" in page.text
    assert "No delivery yet." in page.text
    assert "No silence" in page.text


def test_the_page_lists_channels_deliveries_and_silences_as_text(
    client: TestClient, receiver: Receiver
) -> None:
    made = client.post(
        "/channels",
        json={
            "name": HOSTILE,
            "url": receiver.url + "/T0K3N?key=k3y",
            "events": ["kill"],
            "secret": SECRET,
            "match": {"scope_prefix": HOSTILE},
        },
    ).json()
    refused = client.post(
        "/channels",
        json={"name": "refuser", "url": receiver.url + "/no", "events": ["kill"]},
    ).json()
    receiver.statuses = [200, 404]
    service = service_of(client)
    recorder, _ = recorder_for(service.engine)
    lone_kill(recorder, 1, 42, scope=HOSTILE + "-step")

    def finished() -> bool:
        items = client.get("/deliveries").json()["items"]
        return len(items) == 2 and all(item["state"] != "pending" for item in items)

    assert wait_until(finished)  # by the service's own sender
    client.post(
        "/silences",
        json={"match": {"job": "j"}, "ends_at": time.time() + 600, "comment": HOSTILE},
    )
    page = client.get("/ui/notifications").text
    assert f'data-channel-id="{made["id"]}"' in page
    assert f'data-channel-id="{refused["id"]}"' in page
    assert "T0K3N" not in page and "k3y" not in page and SECRET not in page
    assert "http://127.0.0.1:" in page  # scheme and host
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert page.count('data-state="delivered" data-attempts="1"') == 1
    assert page.count('data-state="failed" data-attempts="1"') == 1
    assert "HTTP 404" in page
    assert "data-silence-id=" in page
    only_failed = client.get("/ui/notifications", params={"state": "failed"}).text
    assert 'data-state="delivered"' not in only_failed
    assert only_failed.count('data-state="failed" data-attempts="1"') == 1
    assert client.get("/ui/notifications", params={"state": "lost"}).status_code == 422


def test_every_time_on_the_page_is_utc_in_one_format(client: TestClient) -> None:
    """A channel's creation, a pending delivery's next try and a silence's start and end,
    each as every page writes a time (issue 25 item 4): ``<time datetime="…Z">YYYY-MM-DD
    HH:MM:SS UTC</time>``, the same instant in both, never a 12-hour clock."""
    client.post("/channels", json={"name": "ops", "url": "http://127.0.0.1:9/", "events": ["kill"]})
    ends_at = time.time() + 600
    made = client.post(
        "/silences", json={"match": {"job": "j"}, "ends_at": ends_at, "comment": "upgrade"}
    )
    assert made.status_code == 201
    page = client.get("/ui/notifications").text
    times = re.findall(r'<time datetime="([^"]+)">([^<]+)</time>', page)
    assert len(times) >= 3  # the channel's creation, the silence's start and end
    for iso, text in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", iso)
        assert text == iso.replace("T", " ").replace("Z", " UTC")
    shown = {text for _, text in times}
    end = datetime.fromtimestamp(int(ends_at), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert end in shown
    assert not re.search(r"\d:\d\d:\d\d [AP]M", page)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def test_a_real_kill_shows_on_the_page_in_chromium(
    page: Page, tmp_path: Path, receiver: Receiver, sleeper: subprocess.Popen[bytes]
) -> None:
    service = ServiceProcess(tmp_path).start()
    try:
        made = httpx.post(
            service.url + "/channels",
            json={"name": "ops", "url": receiver.url, "events": ["kill"], "secret": SECRET},
        ).json()
        timer = httpx.post(
            service.url + "/timers",
            json={"pid": sleeper.pid, "scope_id": "step", "expires_in": 0.2},
        ).json()
        assert_sigkilled(sleeper)
        (got,) = receiver.wait_for(1)
        page.goto(service.url + "/")
        page.click("nav >> text=notifications")
        page.wait_for_url("**/ui/notifications")
        row = page.locator(f'[data-delivery-id="{got.delivery_id}"]')
        row.wait_for()
        assert row.get_attribute("data-state") == "delivered"
        assert row.get_attribute("data-attempts") == "1"
        assert "kill" in row.inner_text()
        channel = page.locator(f'[data-channel-id="{made["id"]}"]')
        assert "ops" in channel.inner_text()
        assert got.json["timer"]["id"] == timer["id"]
    finally:
        service.stop()
