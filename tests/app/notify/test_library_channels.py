"""Channels through the notification library (Apprise): an incident reaches a real
SMTP server (aiosmtpd) as an email, once; its URL is never shown back, and a failure
is recorded with every piece of the URL blotted out."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.notify.channels import ChannelCreate
from app.notify.notify_store import add_channel
from app.notify.sender import Sender
from tests.app.notify.outbox_events import hung_job, lone_kill, recorder_for, rows
from tests.app.notify.smtp_server import Mailbox, text_of
from tests.app.service_process import free_port


def mail_channel(engine: Engine, url: str) -> int:
    given = ChannelCreate(name="mail", url=url, events=["incident", "kill"])
    row = add_channel(engine, given, None, "test")
    assert row.id is not None
    return row.id


def test_an_incident_arrives_by_email_once(backend_engine: Engine, mailbox: Mailbox) -> None:
    mail_channel(backend_engine, mailbox.url())
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)
    sender = Sender(backend_engine, "node-a", "https://timers.example")
    sender.step()
    sender.step()
    (message,) = mailbox.mail
    assert message["to"] == "ops@example.com"
    assert message["subject"] == "timer-service: incident on node-a"
    text = text_of(message)
    assert "job job-1 hung on node-a" in text
    incident = rows(backend_engine, "SELECT incident_id FROM notifications")[0]["incident_id"]
    assert f"https://timers.example/ui/incidents/{incident}" in text
    (delivery,) = rows(backend_engine, "SELECT state, attempts FROM deliveries")
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)


def test_a_mail_server_down_is_retried_then_given_up_naming_no_url_piece(
    backend_engine: Engine,
) -> None:
    port = free_port()  # nothing listens there
    url = f"mailto://127.0.0.1:{port}?from=timers@example.com&to=secret-team@example.com&mode=insecure"
    mail_channel(backend_engine, url)
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 5)
    sender = Sender(backend_engine, "node-a", "http://x", backoff_base=0.0, max_attempts=2)
    sender.step()
    (delivery,) = rows(backend_engine, "SELECT state, attempts, last_error FROM deliveries")
    assert (delivery["state"], delivery["attempts"]) == ("pending", 1)
    assert "Connection error" in delivery["last_error"]
    for piece in ("127.0.0.1", str(port), "secret-team", "timers@example.com"):
        assert piece not in delivery["last_error"]
    sender.step()
    (delivery,) = rows(backend_engine, "SELECT state, attempts FROM deliveries")
    assert (delivery["state"], delivery["attempts"]) == ("gave_up", 2)


def test_library_urls_are_checked_and_never_shown(client: TestClient, mailbox: Mailbox) -> None:
    slack = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    made = client.post("/channels", json={"name": "s", "url": slack, "events": ["incident"]})
    assert made.status_code == 201, made.text
    assert made.json()["url"] == "slack://…"
    assert made.json()["secret"] is None  # the library's channels are not signed
    mail = client.post("/channels", json={"name": "m", "url": mailbox.url(), "events": ["kill"]})
    assert mail.status_code == 201, mail.text
    listed = client.get("/channels").text
    for piece in ("T1JJ3T3L2", "TIiajkdnlazkcOXrIdevi7FQ", "ops@example.com", str(mailbox.port)):
        assert piece not in listed
    tested = client.post(f"/channels/{mail.json()['id']}/test")
    assert tested.json()["delivered"] is True, tested.text
    (message,) = mailbox.wait_for(1)
    assert message["subject"].startswith("timer-service: test on ")


def test_urls_the_library_does_not_take_are_refused(client: TestClient) -> None:
    for url, says in (
        ("json://hooks.example/x", "unsigned webhook"),
        ("xmls://hooks.example/x", "unsigned webhook"),
        ("nonsense://x/y", "does not understand"),
        ("slack://", "does not understand"),
    ):
        answer = client.post("/channels", json={"name": "x", "url": url, "events": ["kill"]})
        assert answer.status_code == 422, answer.text
        assert says in answer.text, answer.text
    assert client.get("/channels").json()["items"] == []
