"""The dashboard pages as HTML, without a browser: the first paint tells the truth,
every URL stays under the app's root path, and the words shown are readable."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.web.dashboard_text import describe_event, middle_ellipsis
from app.web.routers.dashboard import STATIC_DIR
from tests.conftest import in_process, service_of
from tests.waiting import wait_until
from tests.workers import spawn_sleeper

LONG_SCOPE = "/home/alice/experiments/llm/very/deep/package/tree/trainer/loop.py:142 all_reduce"


class Page(HTMLParser):
    """The parts of a page the tests look at: every URL, and elements by id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.rows: list[dict[str, str | None]] = []
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [value or "" for name, value in attrs if name in ("href", "src", "action")]
        if "data-timer-id" in found:
            self.rows.append({"tag": tag, **found})
        if found.get("id"):
            self.by_id[str(found["id"])] = found


def arm(client: TestClient, pid: int, scope: str, expires_in: float, signal: int = 9) -> int:
    body = {"pid": pid, "scope_id": scope, "expires_in": expires_in, "signal": signal}
    response = client.post("/timers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def ended(client: TestClient, timer_id: int) -> bool:
    return bool(client.get(f"/timers/{timer_id}").json()["state"] != "active")


# ---- the first paint ----------------------------------------------------------------------


def test_the_first_paint_says_no_active_timers_only_when_there_are_none(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    empty = Page(client.get("/").text)
    assert empty.rows == []
    assert "hidden" not in empty.by_id["active-empty"]
    assert "hidden" not in empty.by_id["ends-empty"]

    timer_id = arm(client, sleeper.pid, "train.py#42", 120)
    response = client.get("/")
    assert response.status_code == 200
    page = Page(response.text)
    rows = [row for row in page.rows if row["tag"] == "tr"]
    node = service_of(client).settings.node
    assert rows == [
        {"tag": "tr", "data-timer-id": str(timer_id), "data-state": "active", "data-node": node}
    ]
    assert "hidden" in page.by_id["active-empty"]
    assert re.search(r'id="count-active">1<', response.text)
    assert 'id="health" data-status="ok">healthy<' in response.text
    # The chart is drawn by the script: until then it says so.
    assert re.search(r'<div id="chart"><p class="empty">loading…</p></div>', response.text)


def test_the_first_paint_shows_recent_ends_and_honours_the_filters(
    client: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    mine, other = spawn_sleeper(), spawn_sleeper()
    sleepers += [mine, other]
    mine_id = arm(client, mine.pid, "mine", 120)
    gone_id = arm(client, other.pid, "other", 0.2, signal=0)
    assert wait_until(lambda: ended(client, gone_id), timeout=10)

    everything = Page(client.get("/").text)
    assert {(r["data-timer-id"], r["data-state"]) for r in everything.rows if r["tag"] == "tr"} == {
        (str(mine_id), "active"),
        (str(gone_id), "expired"),
    }
    assert "hidden" in everything.by_id["ends-empty"]

    only_mine = Page(client.get("/", params={"pid": mine.pid}).text)
    assert [r["data-timer-id"] for r in only_mine.rows if r["tag"] == "tr"] == [str(mine_id)]
    assert only_mine.by_id["filters"] is not None
    assert f'value="{mine.pid}"' in client.get("/", params={"pid": mine.pid}).text

    ended_only = Page(client.get("/", params={"state": "expired"}).text)
    assert [r["data-timer-id"] for r in ended_only.rows if r["tag"] == "tr"] == [str(gone_id)]
    # With scripts off the form submits every field, empty ones too: no filter, no error.
    assert client.get("/?pid=&scope=&state=").status_code == 200
    assert client.get("/dashboard/state?pid=&scope=&state=").status_code == 200
    assert client.get("/?state=bogus").status_code == 422


def test_the_page_and_the_json_state_agree(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    arm(client, sleeper.pid, "a", 120)
    state = client.get("/dashboard/state").json()
    assert set(state) >= {"now", "health", "counts", "active", "recent_ends", "chart"}
    page = Page(client.get("/").text)
    assert [r["data-timer-id"] for r in page.rows if r["tag"] == "tr"] == [
        str(timer["id"]) for timer in state["active"] + state["recent_ends"]
    ]


def test_a_long_scope_is_cut_in_the_middle_with_the_whole_in_the_title(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    arm(client, sleeper.pid, LONG_SCOPE, 120)
    html = client.get("/").text
    shown = middle_ellipsis(LONG_SCOPE)
    assert f'title="{LONG_SCOPE}">{shown}</a>' in html
    assert shown.endswith("loop.py:142 all_reduce")
    assert shown.startswith("/home/alice/")


# ---- the timer page -----------------------------------------------------------------------


def test_the_timer_page_renders_its_facts_and_a_timeline_in_words(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(client, sleeper.pid, "observed", 0.2, signal=0)
    assert wait_until(lambda: ended(client, timer_id), timeout=10)
    response = client.get(f"/ui/timers/{timer_id}")
    assert response.status_code == 200
    page = Page(response.text)
    assert page.by_id["timer"]["data-state"] == "expired"
    assert page.by_id["timer"]["data-timer-id"] == str(timer_id)
    assert 'id="timer-state" data-state="expired">expired<' in response.text
    assert 'id="f-signal">observe only<' in response.text
    timeline = response.text[response.text.index('id="timeline"') :]
    timeline = timeline[: timeline.index("</ol>")]
    assert 'data-kind="acquired"' in timeline and 'data-kind="expired"' in timeline
    assert "observe only" in timeline and "ms after the deadline" in timeline
    assert "{" not in timeline and "}" not in timeline
    # Observe only: no signal was sent, so no wording about a kill.
    assert "Stack captured at expiry (observe only, no signal sent)" in response.text
    assert "before the kill" not in response.text
    assert "before the signal" not in response.text


def test_a_killed_timer_page_says_the_stack_came_before_the_kill(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(client, sleeper.pid, "killed", 0.2)
    assert wait_until(lambda: ended(client, timer_id), timeout=10)
    details = client.get(f"/dashboard/timers/{timer_id}").json()
    assert details["timer"]["state"] == "killed"
    assert details["stack_title"] == "Stack captured before the kill"
    killed = [event for event in details["events"] if event["kind"] == "killed"]
    assert len(killed) == 1
    assert re.match(r"signal SIGKILL sent \d+\.\d ms after the deadline", killed[0]["text"])
    html = client.get(f"/ui/timers/{timer_id}").text
    assert killed[0]["text"] in html


def test_an_unknown_timer_is_a_404_that_says_so(client: TestClient) -> None:
    response = client.get("/ui/timers/999999")
    assert response.status_code == 404
    assert 'id="timer-state">not found<' in response.text
    assert client.get("/dashboard/timers/999999").status_code == 404


# ---- words --------------------------------------------------------------------------------


def test_middle_ellipsis_keeps_the_start_and_the_tail() -> None:
    assert middle_ellipsis("short") == "short"
    assert middle_ellipsis("x" * 48) == "x" * 48
    cut = middle_ellipsis(LONG_SCOPE)
    assert len(cut) == 48 and cut.count("…") == 1
    head, tail = cut.split("…")
    assert LONG_SCOPE.startswith(head) and LONG_SCOPE.endswith(tail)
    assert len(tail) > len(head)  # the tail is the useful part of a file path


def test_events_read_as_words_never_as_json() -> None:
    stack = {"method": "py-spy", "seconds": 0.0432, "bytes": 900, "notes": []}
    assert (
        describe_event("killed", {"latency": 0.0013, "children": [], "stack": stack}, 9)
        == "signal SIGKILL sent 1.3 ms after the deadline, stack by py-spy in 43 ms"
    )
    assert (
        describe_event("expired", {"reason": "observe only", "latency": 0.002}, 0)
        == "observe only, 2.0 ms after the deadline"
    )
    assert (
        describe_event(
            "escalated", {"reason": "still alive 1.0s after signal 15", "sigkilled": [7]}, 15
        )
        == "still alive 1.0s after signal 15, SIGKILL sent to 7"
    )
    assert describe_event("released", {"released_by": "http"}, 9) == "released over http"
    assert describe_event("acquired", {}, 9) == ""
    odd = describe_event("killed", {"new_key": {"a": 1, "b": [2, 3]}, "flag": None}, 9)
    assert odd == "new_key: a=1, b=2, 3, flag: none"
    assert "{" not in odd and "[" not in odd


# ---- behind a proxy, under a prefix ------------------------------------------------------


@pytest.fixture
def prefixed(settings: Settings) -> Iterator[TestClient]:
    """The app as uvicorn --root-path /prefix serves it behind a proxy that passes on
    the public Host name (which the operator allows with --allowed-hosts)."""
    behind_proxy = replace(settings, allowed_hosts=("proxy.example", "localhost"))
    with in_process(create_app(behind_proxy), root_path="/prefix") as test_client:
        yield test_client


def test_under_a_prefix_every_url_on_the_pages_starts_with_it(
    prefixed: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(prefixed, sleeper.pid, "train.py#1", 120)
    for path in ("/", f"/ui/timers/{timer_id}"):
        response = prefixed.get(path, headers={"host": "proxy.example"})
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text
        assert "proxy.example" not in response.text
        page = Page(response.text)
        urls = [url for url in page.urls if not url.startswith("data:")]
        assert len(urls) >= 6
        assert all(url.startswith("/prefix/") for url in urls), urls
        assert page.by_id.get("health") is not None
        assert 'data-root="/prefix"' in response.text
    # The assets the page names are served there.
    for asset in ("style.css", "common.js", "dashboard.js", "timer.js"):
        assert prefixed.get(f"/prefix/static/{asset}").status_code == 200
    assert prefixed.get(f"/prefix/ui/timers/{timer_id}").status_code == 200


def test_without_a_prefix_urls_are_root_relative(settings: Settings) -> None:
    with in_process(create_app(replace(settings, allowed_hosts=("example.org",)))) as client:
        page = Page(client.get("/", headers={"host": "example.org"}).text)
    urls = [url for url in page.urls if not url.startswith("data:")]
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls)


def test_the_scripts_build_every_url_from_the_root_path() -> None:
    """A fetch or link the scripts make goes through ``TS.url`` (the page's root path)."""
    for script in sorted(Path(STATIC_DIR).glob("*.js")):
        source = re.sub(r"(?<!:)//[^\n]*", "", script.read_text())  # without comments
        # Worker strings stay text: nothing is ever parsed as HTML.
        assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", source)
        for match in re.finditer(r"""["'`]/""", source):
            before = source[max(0, match.start() - 7) : match.start()]
            assert before == "TS.url(", (
                f"{script.name}: {source[match.start() - 30 : match.end() + 30]!r}"
            )
        assert not re.search(r"fetch\((?!TS\.url\()", source), script.name
        assert "location.origin" not in source and "location.host" not in source
