"""``/channels`` and ``/deliveries`` over HTTP (contract 11): only the admin sets a
URL, and reads never show a secret or a URL's credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.access.callers import Caller, current_caller
from app.main import create_app
from app.settings import Settings
from tests.app.notify.receiver import Receiver, verified
from tests.conftest import in_process

SECRET = "a-secret-of-32-characters-------"
WEBHOOK = {"name": "ops", "events": ["incident", "kill"]}


def test_the_admin_adds_lists_and_deletes_a_channel(client: TestClient) -> None:
    made = client.post(
        "/channels",
        json={
            **WEBHOOK,
            "url": "https://bob:hunter2@hooks.example/services/T000/B000/XXXX?key=k3y",
            "secret": SECRET,
            "match": {"job": "train", "scope_prefix": "step"},
        },
    )
    assert made.status_code == 201, made.text
    channel = made.json()
    assert channel["url"] == "https://hooks.example/…"
    assert channel["secret_set"] is True and channel["secret"] is None
    assert channel["match"] == {"job": "train", "scope_prefix": "step", "node": None, "uid": None}
    listed = client.get("/channels")
    assert listed.status_code == 200
    shown = listed.text
    for secret in ("bob", "hunter2", "T000", "XXXX", "k3y", SECRET):
        assert secret not in shown
    assert [item["id"] for item in listed.json()["items"]] == [channel["id"]]
    deleted = client.delete(f"/channels/{channel['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == channel["id"]
    assert client.get("/channels").json()["items"] == []
    assert client.delete(f"/channels/{channel['id']}").status_code == 404


def test_a_webhook_given_no_secret_gets_one_shown_once(client: TestClient) -> None:
    made = client.post("/channels", json={**WEBHOOK, "url": "http://127.0.0.1:9/x"})
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    assert isinstance(secret, str) and len(secret) == 64
    assert secret not in client.get("/channels").text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**WEBHOOK, "url": "ftp://files.example/x"}, "unsupported URL scheme"),
        ({**WEBHOOK, "url": "file:///etc/shadow"}, "unsupported URL scheme"),
        ({**WEBHOOK, "url": "https:///nohost"}, "needs a host"),
        ({**WEBHOOK, "url": "https://h.example/a b"}, "spaces or control"),
        ({**WEBHOOK, "url": "https://u:p@h.example:8x/"}, "port is not a number"),
        ({**WEBHOOK, "url": "https://h.example:99999/"}, "port is not a number"),
        ({**WEBHOOK, "url": "http://h.example:0/"}, "port is not a number"),
        ({**WEBHOOK, "url": "https://h.example/", "events": ["everything"]}, "events"),
        ({**WEBHOOK, "url": "https://h.example/", "events": []}, "events"),
        ({**WEBHOOK, "url": "https://h.example/", "secret": "short"}, "secret"),
        ({**WEBHOOK, "url": "https://h.example/", "match": {"pid": 1}}, "pid"),
        ({**WEBHOOK, "url": "https://h.example/", "match": {"uid": -1}}, "uid"),
    ],
)
def test_bad_channels_get_a_clear_422(
    client: TestClient, body: dict[str, object], says: str
) -> None:
    answer = client.post("/channels", json=body)
    assert answer.status_code == 422, answer.text
    assert says in answer.text
    assert client.get("/channels").json()["items"] == []


@pytest.fixture
def user_client(settings: Settings) -> Iterator[TestClient]:
    """The app as a user that is neither root nor the service's user."""
    app = create_app(settings)
    with in_process(app) as test_client:
        app.dependency_overrides[current_caller] = lambda: Caller(54321, "tcp", "test")
        yield test_client


def test_only_the_admin_may_set_a_url(user_client: TestClient) -> None:
    for method, path, body in (
        ("POST", "/channels", {**WEBHOOK, "url": "http://169.254.169.254/latest"}),
        ("DELETE", "/channels/1", None),
        ("POST", "/channels/1/test", None),
    ):
        answer = user_client.request(method, path, json=body)
        assert answer.status_code == 403, answer.text
        assert "uid 54321 (tcp test) may not" in answer.json()["detail"]
    assert user_client.get("/channels").json()["items"] == []


def test_a_channel_test_reaches_the_receiver_signed(client: TestClient, receiver: Receiver) -> None:
    channel = client.post("/channels", json={**WEBHOOK, "url": receiver.url, "secret": SECRET})
    answer = client.post(f"/channels/{channel.json()['id']}/test")
    assert answer.status_code == 200, answer.text
    assert answer.json()["delivered"] is True
    (got,) = receiver.got
    assert verified(SECRET, got.headers["x-timer-service-signature"], got.body)
    assert got.json["kind"] == "test"
    assert got.delivery_id == answer.json()["delivery_id"]
    assert client.get("/deliveries").json()["items"] == []  # a test is not a delivery


def test_deliveries_are_listed_by_channel_and_state(client: TestClient) -> None:
    assert client.get("/deliveries", params={"state": "delivered"}).json() == {
        "items": [],
        "next": None,
    }
    assert client.get("/deliveries", params={"state": "lost"}).status_code == 422
    assert client.get("/deliveries", params={"channel": 0}).status_code == 422
