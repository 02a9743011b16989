"""Silences (contract 11): a notification that a silence in force matches is recorded
as ``silenced`` and not sent; a user's silence mutes only its own uid's work."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.access.callers import Caller, current_caller
from app.db.database import make_engine
from app.main import create_app
from app.notify.channels import Match
from app.notify.sender import Sender
from app.notify.silences import MAX_SILENCES, MAX_SILENCES_PER_UID, SilenceCreate, add_silence
from app.settings import Settings
from tests.app.notify.outbox_events import add_webhook, hung_job, lone_kill, recorder_for, rows
from tests.app.notify.receiver import Receiver
from tests.conftest import in_process

SECRET = "a-secret-of-32-characters-------"
USER = 54321


def silence(engine: Engine, starts: float = 0.0, ends: float = 3600.0, **match: object) -> int:
    now = time.time()
    made = add_silence(
        engine,
        SilenceCreate(
            match=Match.model_validate(match),
            starts_at=now + starts,
            ends_at=now + ends,
            comment="maintenance",
        ),
        "test",
    )
    return made.id


def states(engine: Engine) -> list[tuple[str, int]]:
    return [
        (row["state"], row["attempts"])
        for row in rows(engine, "SELECT state, attempts FROM deliveries ORDER BY id")
    ]


def test_a_silence_holds_back_what_it_matches(backend_engine: Engine, receiver: Receiver) -> None:
    add_webhook(backend_engine, receiver.url, SECRET)
    silence(backend_engine, job="job-1")
    silence(backend_engine, scope_prefix="other")  # matches neither
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)  # job-1: silenced
    lone_kill(recorder, 100, 9, scope="step")  # no job: sent
    sender = Sender(backend_engine, "node-a", "http://x")
    sender.step()
    assert states(backend_engine) == [("silenced", 0), ("delivered", 1)]
    assert [got.json["kind"] for got in receiver.got] == ["kill"]
    assert sender.outcomes["silenced"] == 1
    (held,) = rows(backend_engine, "SELECT last_error FROM deliveries WHERE state = 'silenced'")
    assert "maintenance" in held["last_error"]


def test_a_window_not_yet_open_or_over_holds_nothing(
    backend_engine: Engine, receiver: Receiver
) -> None:
    add_webhook(backend_engine, receiver.url, SECRET)
    silence(backend_engine, starts=600, ends=1200, scope_prefix="st")
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 9, scope="step")
    Sender(backend_engine, "node-a", "http://x").step()
    assert states(backend_engine) == [("delivered", 1)]


def test_a_users_silence_does_not_mute_another_users_job(
    backend_engine: Engine, receiver: Receiver
) -> None:
    add_webhook(backend_engine, receiver.url, SECRET)
    silence(backend_engine, uid=USER, job="job-1")  # the same job id, another user's
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)  # uid 1234's
    Sender(backend_engine, "node-a", "http://x").step()
    assert states(backend_engine) == [("delivered", 1)]


@pytest.fixture
def user_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with in_process(app) as test_client:
        app.dependency_overrides[current_caller] = lambda: Caller(USER, "tcp", "test")
        yield test_client


def window(**match: object) -> dict[str, object]:
    return {"match": match, "ends_at": time.time() + 3600, "comment": "upgrading the NFS"}


def test_a_user_silences_its_own_uid_only(user_client: TestClient) -> None:
    made = user_client.post("/silences", json=window(job="train"))
    assert made.status_code == 201, made.text
    assert made.json()["match"]["uid"] == USER  # given its own uid
    assert made.json()["active"] is True
    other = user_client.post("/silences", json=window(uid=0))
    assert other.status_code == 403, other.text
    assert "only its own" in other.json()["detail"]
    listed = user_client.get("/silences").json()["items"]
    assert [item["id"] for item in listed] == [made.json()["id"]]
    assert user_client.delete(f"/silences/{made.json()['id']}").status_code == 200
    assert user_client.get("/silences").json()["items"] == []


def test_the_admin_silences_anything_and_a_user_cannot_end_it(
    client: TestClient, settings: Settings
) -> None:
    made = client.post("/silences", json=window(node="gpu-7"))
    assert made.status_code == 201, made.text
    assert made.json()["match"] == {"node": "gpu-7", "job": None, "uid": None, "scope_prefix": None}
    client.app.dependency_overrides[current_caller] = lambda: Caller(USER, "tcp", "test")  # type: ignore[attr-defined]
    refused = client.delete(f"/silences/{made.json()['id']}")
    assert refused.status_code == 403, refused.text
    assert len(client.get("/silences").json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"match": {}, "ends_at": 1.0, "comment": "x"}, "in the past"),
        ({"match": {}, "starts_at": 2e9, "ends_at": 1.9e9, "comment": "x"}, "after starts_at"),
        ({"match": {}, "ends_at": time.time() + 1e8, "comment": "x"}, "at most 90 days"),
        ({"match": {}, "ends_at": time.time() + 60, "comment": ""}, "comment"),
        ({"match": {"pid": 3}, "ends_at": time.time() + 60, "comment": "x"}, "pid"),
        ({"match": {}, "ends_at": "soon", "comment": "x"}, "ends_at"),
    ],
)
def test_bad_silences_get_a_clear_422(
    client: TestClient, body: dict[str, object], says: str
) -> None:
    answer = client.post("/silences", json=body)
    assert answer.status_code == 422, answer.text
    assert says in answer.text


def test_the_dashboard_shows_the_silences_as_text(client: TestClient) -> None:
    hostile = "<script>alert(1)</script> NFS upgrade"
    made = client.post("/silences", json={**window(job="<b>train</b>"), "comment": hostile}).json()
    page = client.get("/").text
    assert f'data-silence-id="{made["id"]}" data-active="true"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; NFS upgrade" in page
    assert "job=&lt;b&gt;train&lt;/b&gt;" in page
    assert "<script>alert(1)" not in page
    client.delete(f"/silences/{made['id']}")
    assert "No silence: every notification goes out." in client.get("/").text


def test_a_uid_has_so_many_silences_and_all_of_them_so_many(
    user_client: TestClient, settings: Settings
) -> None:
    for _ in range(MAX_SILENCES_PER_UID):
        assert user_client.post("/silences", json=window(job="train")).status_code == 201
    refused = user_client.post("/silences", json=window(job="train"))
    assert refused.status_code == 429, refused.text
    assert f"uid {USER} has {MAX_SILENCES_PER_UID} silences not ended" in refused.text
    assert "delete some" in refused.text
    # Others' silences fill the service's total: then no one adds one.
    now = time.time()
    others = [
        {"match": json.dumps({"uid": uid}), "uid": uid, "now": now, "ends": now + 3600}
        for uid in range(1000, 1000 + MAX_SILENCES - MAX_SILENCES_PER_UID)
    ]
    engine = make_engine(settings.db_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO silences (match, starts_at, ends_at, comment, created_by, uid,"
                " created_at) VALUES (:match, :now, :ends, 'x', 'test', :uid, :now)"
            ),
            others,
        )
    user_client.app.dependency_overrides[current_caller] = lambda: Caller(99, "tcp", "test")  # type: ignore[attr-defined]
    full = user_client.post("/silences", json=window(job="train"))
    assert full.status_code == 429, full.text
    assert f"{MAX_SILENCES} silences are not ended" in full.text
    engine.dispose()


def test_a_users_comment_is_shown_only_to_who_may_read_its_work(
    client: TestClient,
) -> None:
    app = client.app

    def as_user(uid: int) -> Callable[[], Caller]:
        return lambda: Caller(uid, "tcp", "test")

    app.dependency_overrides[current_caller] = as_user(USER)  # type: ignore[attr-defined]
    said = "call +1-555-0100 for the NFS"
    made = client.post("/silences", json={**window(job="train"), "comment": said}).json()
    assert client.get("/silences").json()["items"][0]["comment"] == said  # its owner
    app.dependency_overrides[current_caller] = as_user(USER + 1)  # type: ignore[attr-defined]
    (seen,) = client.get("/silences").json()["items"]
    assert seen["id"] == made["id"]
    assert seen["comment"].startswith(f"comment hidden: it is uid {USER}'s")
    for page in ("/", "/ui/notifications"):
        text_of_page = client.get(page).text
        assert f'data-silence-id="{made["id"]}"' in text_of_page
        assert said not in text_of_page
        assert "comment hidden" in text_of_page
    app.dependency_overrides[current_caller] = as_user(0)  # type: ignore[attr-defined]
    assert client.get("/silences").json()["items"][0]["comment"] == said  # root
    assert said in client.get("/ui/notifications").text


def test_a_users_comment_stays_out_of_the_deliveries(
    backend_engine: Engine, receiver: Receiver
) -> None:
    """The silenced delivery's reason is shown by GET /deliveries to anyone: it names
    the silence, not what its user wrote; an admin's comment is kept."""
    add_webhook(backend_engine, receiver.url, SECRET)
    now = time.time()
    said = "call +1-555-0100 for the NFS"
    for uid in (1234, None):
        add_silence(
            backend_engine,
            SilenceCreate(
                match=Match(uid=uid, scope_prefix="own" if uid else "admin"),
                ends_at=now + 3600,
                comment=said,
            ),
            "test",
        )
    recorder, _ = recorder_for(backend_engine)
    lone_kill(recorder, 1, 9, scope="own-step")  # uid 1234: its own silence holds it
    lone_kill(recorder, 3, 10, scope="admin-step")  # the admin's silence holds it
    Sender(backend_engine, "node-a", "http://x").step()
    errors = [
        row["last_error"]
        for row in rows(backend_engine, "SELECT last_error FROM deliveries ORDER BY id")
    ]
    assert errors[0] is not None and said not in errors[0] and "uid 1234" in errors[0]
    assert errors[1] is not None and said in errors[1]
    assert receiver.got == []
