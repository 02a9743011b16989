"""The dashboard as one view of the fleet (contract 9, issue 16 item 3): nodes a and b
and a hub on one SQLite file. The hub's first paint lists both nodes' timers with their
node, the node filter narrows them, and the Nodes section shows both nodes up; in real
Chromium, the hub's page shows a timer armed on node b appear and end, with no reload."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page
from sqlalchemy import Engine
from sqlmodel import Session

from app.db import nodes, store
from app.db.models import Timer
from app.db.nodes import NodeStatus
from app.main import create_app
from app.settings import Settings
from app.web import fleet_view
from tests.app.service_process import ServiceProcess
from tests.app.web.test_dashboard_pages import Page as ParsedPage
from tests.chromium import needs_chromium
from tests.conftest import in_process, migrated_engine, service_of
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

# Node names are strings an operator (or an attacker with a node) chose: shown as text.
HOSTILE = '<img src=x onerror="window.__pwned=1">b&"'


class Elements(HTMLParser):
    """Every element's tag and attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[dict[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append({"tag": tag, **dict(attrs)})


@pytest.fixture
def fleet(settings: Settings) -> Iterator[dict[str, TestClient]]:
    """Nodes a and b and a hub, on one SQLite file."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(
                in_process(create_app(replace(settings, node_name=name, hub=name == "hub")))
            )
            for name in ("a", "b", "hub")
        }


def arm(client: TestClient, pid: int, scope: str, expires_in: float = 120) -> int:
    body = {"pid": pid, "scope_id": scope, "expires_in": expires_in}
    response = client.post("/timers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def timer_rows(client: TestClient, **params: str) -> dict[str, dict[str, Any]]:
    """The timer rows of the dashboard's first paint, by id."""
    response = client.get("/", params=params)
    assert response.status_code == 200, response.text
    return {
        str(row["data-timer-id"]): row
        for row in ParsedPage(response.text).rows
        if row["tag"] == "tr"
    }


def recorded(client: TestClient, *timer_ids: int) -> bool:
    """Whether every one of the timers is in the shared database (any node reads it)."""
    return all(client.get(f"/timers/{timer_id}").status_code == 200 for timer_id in timer_ids)


def test_the_hubs_first_paint_lists_both_nodes_timers_with_their_node(
    fleet: dict[str, TestClient], sleepers: list[subprocess.Popen[bytes]]
) -> None:
    on_a, on_b = spawn_sleeper(), spawn_sleeper()
    sleepers += [on_a, on_b]
    a_id, b_id = arm(fleet["a"], on_a.pid, "on a"), arm(fleet["b"], on_b.pid, "on b")
    hub = fleet["hub"]
    assert wait_until(lambda: recorded(hub, a_id, b_id))

    rows = timer_rows(hub)
    assert {timer_id: row["data-node"] for timer_id, row in rows.items()} == {
        str(a_id): "a",
        str(b_id): "b",
    }
    assert all(row["data-state"] == "active" for row in rows.values())
    # Node a's page: its own timer from its engine, b's from the database, once each.
    assert {i: row["data-node"] for i, row in timer_rows(fleet["a"]).items()} == {
        str(a_id): "a",
        str(b_id): "b",
    }
    # The node filter narrows them, on the hub and on a node (its own node or another).
    for client in (hub, fleet["a"]):
        assert set(timer_rows(client, node="b")) == {str(b_id)}
        assert set(timer_rows(client, node="a")) == {str(a_id)}
        assert timer_rows(client, node="nowhere") == {}
    # The scope filter matches a substring, case and all, as for this node's timers.
    for client in (hub, fleet["a"]):
        assert set(timer_rows(client, scope="n b")) == {str(b_id)}
        assert set(timer_rows(client, scope="N B")) == set()
        assert set(timer_rows(client, scope="on ")) == {str(a_id), str(b_id)}
    page = hub.get("/", params={"node": "b"}).text
    assert 'name="node" size="16" maxlength="256" list="node-names" value="b"' in page
    # The JSON state the page polls says the same.
    state = hub.get("/dashboard/state", params={"node": "b"}).json()
    assert [(t["id"], t["node"]) for t in state["active"]] == [(b_id, "b")]
    assert state["counts"]["active"] == 2


def test_a_timer_ended_on_another_node_shows_as_ended_on_the_hub(
    fleet: dict[str, TestClient], sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(fleet["b"], sleeper.pid, "short", expires_in=0.3)
    assert wait_dead(sleeper) == -9

    def killed_on_the_hub() -> bool:
        return timer_rows(fleet["hub"]).get(str(timer_id), {}).get("data-state") == "killed"

    assert wait_until(killed_on_the_hub)
    for client in (fleet["hub"], fleet["a"]):
        ends = client.get("/dashboard/state", params={"state": "killed"}).json()["recent_ends"]
        assert [(t["id"], t["node"], t["state"]) for t in ends] == [(timer_id, "b", "killed")]
        assert client.get("/dashboard/state", params={"node": "a"}).json()["recent_ends"] == []


def test_the_nodes_section_shows_both_nodes_up(fleet: dict[str, TestClient]) -> None:
    response = fleet["hub"].get("/")
    nodes = {
        row["data-node"]: row
        for row in Elements(response.text).found
        if row["tag"] == "tr" and row.get("data-node") and "data-timer-id" not in row
    }
    assert set(nodes) == {"a", "b"}  # the hub arms nothing: not a node of the fleet
    assert all(row["data-status"] == "up" for row in nodes.values())
    assert '<span class="badge" data-status="up">up</span>' in response.text
    # The filter's choices are the nodes' names.
    assert '<option value="a"></option><option value="b"></option>' in response.text
    state = fleet["a"].get("/dashboard/state").json()
    assert [(n["name"], n["status"]) for n in state["nodes"]] == [("a", "up"), ("b", "up")]


def test_a_hostile_node_name_is_text(settings: Settings, sleeper: subprocess.Popen[bytes]) -> None:
    with in_process(create_app(replace(settings, node_name=HOSTILE))) as client:
        timer_id = arm(client, sleeper.pid, "s")
        response = client.get("/")
        assert "<img" not in response.text
        assert 'data-node="&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;b&amp;&#34;"' in (
            response.text
        )
        assert timer_rows(client, node=HOSTILE)[str(timer_id)]["data-node"] == HOSTILE


# ---- in real Chromium, the hub's page and node b, two real services on one SQLite file ---


@pytest.fixture
def node_b_and_hub(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    (tmp_path / "b").mkdir()
    (tmp_path / "hub").mkdir()
    node_b = ServiceProcess(tmp_path / "b", "--node-name", HOSTILE)
    hub = ServiceProcess(tmp_path / "hub", "--hub", "--node-name", "hub")
    hub.db_url = node_b.db_url
    node_b.start()
    try:
        hub.start()
        try:
            yield node_b, hub
        finally:
            hub.stop()
    finally:
        node_b.stop()


@needs_chromium
def test_the_hubs_page_shows_a_timer_of_node_b_appear_and_get_killed_without_a_reload(
    browser: Browser,
    node_b_and_hub: tuple[ServiceProcess, ServiceProcess],
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    node_b, hub = node_b_and_hub
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page: Page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(hub.url + "/")
    page.evaluate("window.__openedOnce = true")  # gone if the page ever reloads
    node_row = page.locator("#nodes-table tbody tr")
    node_row.wait_for(timeout=5000)
    assert node_row.get_attribute("data-node") == HOSTILE
    assert node_row.get_attribute("data-status") == "up"

    # Armed on node b after the hub's page opened: only the page's polling can show it.
    stuck, finished = spawn_sleeper(), spawn_sleeper()
    sleepers += [stuck, finished]
    ids = {}
    for worker, expires_in in ((stuck, 3.0), (finished, 120.0)):
        body = {"pid": worker.pid, "scope_id": f"on b {worker.pid}", "expires_in": expires_in}
        response = httpx.post(node_b.url + "/timers", json=body)
        assert response.status_code == 201, response.text
        ids[worker.pid] = response.json()["id"]
    for timer_id in ids.values():
        row = page.locator(f'#active-table [data-timer-id="{timer_id}"][data-state="active"]')
        row.wait_for(timeout=10000)
        assert row.get_attribute("data-node") == HOSTILE
        assert row.locator("td.node").get_attribute("title") == HOSTILE

    released = httpx.post(
        node_b.url + "/timers/release",
        json={"pid": finished.pid, "scope_id": f"on b {finished.pid}"},
    )
    assert released.status_code == 200, released.text
    assert wait_dead(stuck) == -9
    for pid, state in ((stuck.pid, "killed"), (finished.pid, "released")):
        # Kills have their own list, so releases cannot push them out of view.
        table = "#kills-table" if state == "killed" else "#ends-table"
        ended = page.locator(f'{table} [data-timer-id="{ids[pid]}"][data-state="{state}"]')
        ended.wait_for(timeout=10000)
        assert ended.get_attribute("data-node") == HOSTILE
        assert page.locator(f'[data-timer-id="{ids[pid]}"]').count() == 1
    # Narrowed to node b by the filter, kept in the URL; another node's name shows none.
    page.fill("input[name=node]", "elsewhere")
    page.click("button[type=submit]")
    page.locator(f'[data-timer-id="{ids[stuck.pid]}"]').wait_for(state="detached", timeout=5000)
    assert "node=elsewhere" in page.url
    page.fill("input[name=node]", HOSTILE)
    page.click("button[type=submit]")
    page.locator(f'[data-timer-id="{ids[stuck.pid]}"]').wait_for(timeout=5000)
    assert page.evaluate("window.__openedOnce") is True, "the page reloaded"
    assert page.evaluate("window.__pwned") is None
    tables = "#nodes-table, #active-table, #kills-table, #ends-table"
    assert page.locator(f":is({tables}) img").count() == 0
    assert errors == [], errors
    context.close()


def test_a_node_alone_reads_no_timers_from_the_database_and_counts_its_own_live(
    client: TestClient, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite default, one node: the page's timers come from the engine and the live
    feed as before; the database is asked only who the nodes are, not for a count."""

    def asked(*args: object, **kwargs: object) -> None:
        raise AssertionError("a node alone read the fleet's timers or counts")

    real_node_statuses = nodes.node_statuses

    def nodes_without_counts(
        engine: Engine, timeout: float, now: float | None = None, *, count_active: bool = True
    ) -> list[NodeStatus]:
        if count_active:
            asked()
        return real_node_statuses(engine, timeout, now, count_active=False)

    monkeypatch.setattr(store, "fleet_active", asked)
    monkeypatch.setattr(store, "fleet_recently_ended", asked)
    monkeypatch.setattr(fleet_view, "node_statuses", nodes_without_counts)
    timer_id = arm(client, sleeper.pid, "alone")
    state = client.get("/dashboard/state").json()
    node = service_of(client).settings.node
    assert [(t["id"], t["node"]) for t in state["active"]] == [(timer_id, node)]
    assert [(n["name"], n["status"], n["active_timers"]) for n in state["nodes"]] == [
        (node, "up", 1)
    ]
    assert state["node"] == node


def test_the_fleet_reads_on_both_backends(backend_url: str) -> None:
    """Other nodes' timers as the dashboard reads them, on SQLite and on PostgreSQL:
    never the local node's (nor its pre-fleet "" rows), filtered, soonest or newest first."""
    engine = migrated_engine(backend_url)
    try:
        # (id, node, state, scope, expiration_time, ended_at)
        rows: list[tuple[int, str, str, str, float, float | None]] = [
            (1, "a", "active", "x", 10.0, None),
            (2, "b", "active", "Train b", 30.0, None),
            (3, "b", "active", "train b", 20.0, None),
            (4, "", "active", "old", 5.0, None),
            (5, "b", "killed", "k", 1.0, 50.0),
            (6, "c", "released", "r", 1.0, 60.0),
            (7, "a", "expired", "e", 1.0, 70.0),
        ]
        with Session(engine) as session:
            for timer_id, node, state, scope, expires, ended in rows:
                session.add(
                    Timer(
                        id=timer_id,
                        pid=100 + timer_id,
                        scope_id=scope,
                        signal=9,
                        source="http",
                        state=state,
                        acquired_at=0.0,
                        expiration_time=expires,
                        ended_at=ended,
                        node=node,
                    )
                )
            session.commit()
            active, total = store.fleet_active(session, "a", None, None, None, 10)
            assert ([t.id for t in active], total) == ([3, 2], 2)
            active, total = store.fleet_active(session, "a", None, None, None, 1)
            assert ([t.id for t in active], total) == ([3], 2)
            active, _ = store.fleet_active(session, None, None, None, None, 10)  # a hub
            assert [t.id for t in active] == [4, 1, 3, 2]
            assert [t.id for t in store.fleet_active(session, None, "a", None, None, 9)[0]] == [1]
            assert [t.id for t in store.fleet_active(session, "a", None, 103, None, 9)[0]] == [3]
            assert [t.id for t in store.fleet_active(session, "a", None, None, "Tr", 9)[0]] == [2]
            newest = store.fleet_recently_ended(session, "a", None, 10)
            assert [t.id for t in newest] == [6, 5]
            assert [t.id for t in store.fleet_recently_ended(session, None, None, 10)] == [7, 6, 5]
            assert [t.id for t in store.fleet_recently_ended(session, "a", "b", 10)] == [5]
    finally:
        engine.dispose()
