"""The dashboard in real headless Chromium (Debian's), against the real service."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page
from starlette.types import ASGIApp, Receive, Scope, Send

from app.main import create_app
from app.settings import Settings
from app.web.dashboard_text import middle_ellipsis
from tests.app.service_process import ServiceProcess, free_port
from tests.chromium import needs_chromium, watched_page
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

ARTIFACTS = Path(__file__).parents[3] / "artifacts"

pytestmark = needs_chromium


@pytest.fixture
def page(browser: Browser, service: ServiceProcess) -> Iterator[Page]:
    with watched_page(browser) as opened:
        opened.goto(service.url + "/")
        opened.evaluate("window.__openedOnce = true")  # gone if the page ever reloads
        yield opened
        assert opened.evaluate("window.__openedOnce") is True, "the page reloaded"


def appeared(page: Page, selector: str) -> Locator:
    """The element at ``selector``, once the page shows it (within 5 s)."""
    found = page.locator(selector)
    found.wait_for(timeout=5000)
    return found


def arm(service: ServiceProcess, pid: int, scope: str, expires_in: float) -> int:
    body = {"pid": pid, "scope_id": scope, "expires_in": expires_in}
    response = httpx.post(service.url + "/timers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_a_timer_appears_with_a_ticking_countdown(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "train.py#42", 120)
    row = appeared(page, f'[data-timer-id="{timer_id}"][data-state="active"]')
    first = row.locator(".countdown").inner_text()
    page.wait_for_timeout(2100)
    second = row.locator(".countdown").inner_text()
    assert first != second, f"countdown did not move: {first!r}"
    assert row.locator(".scope").inner_text() == "train.py#42"
    assert str(sleeper.pid) in row.inner_text()


def test_a_killed_worker_flips_to_killed_without_a_reload_and_the_title_counts_it(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "stuck", 1.5)
    appeared(page, f'[data-timer-id="{timer_id}"][data-state="active"]')
    assert wait_dead(sleeper) == -9
    killed = page.locator(f'[data-timer-id="{timer_id}"][data-state="killed"]')
    killed.wait_for(timeout=3000)
    assert page.locator(f'[data-timer-id="{timer_id}"]').count() == 1
    assert "ms after the deadline" in killed.inner_text()
    page.wait_for_function("document.title.startsWith('(1 killed)')", timeout=3000)


def test_a_hostile_scope_id_renders_as_text(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    timer_id = arm(service, sleeper.pid, hostile, 120)
    row = appeared(page, f'[data-timer-id="{timer_id}"]')
    assert row.locator(".scope").get_attribute("title") == hostile
    assert row.locator(".scope").inner_text() == middle_ellipsis(hostile)
    assert row.locator("img, script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_the_filter_is_kept_in_the_url(
    page: Page, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    mine, other = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([mine, other])
    mine_id, other_id = arm(service, mine.pid, "mine", 120), arm(service, other.pid, "other", 120)
    appeared(page, f'[data-timer-id="{other_id}"]')
    page.fill("input[name=pid]", str(mine.pid))
    page.click("button[type=submit]")
    page.locator(f'[data-timer-id="{other_id}"]').wait_for(state="detached", timeout=3000)
    assert f"pid={mine.pid}" in page.url
    page.reload()  # the URL alone restores the filter
    page.evaluate("window.__openedOnce = true")
    appeared(page, f'[data-timer-id="{mine_id}"]')
    assert page.locator(f'[data-timer-id="{other_id}"]').count() == 0
    assert page.input_value("input[name=pid]") == str(mine.pid)


def test_timer_detail_page_shows_the_timeline(
    browser: Browser, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "detail", 0.5)
    assert wait_dead(sleeper) == -9
    page = browser.new_page()
    page.goto(f"{service.url}/ui/timers/{timer_id}")
    appeared(page, f'[data-timer-id="{timer_id}"][data-state="killed"]')
    appeared(page, '.timeline li[data-kind="killed"]')
    kinds = page.locator(".timeline li").evaluate_all("items => items.map(i => i.dataset.kind)")
    assert kinds == ["acquired", "killed"]
    # The stack captured before the kill is shown, as text.
    page.wait_for_function(
        "document.getElementById('stack-method').textContent.startsWith('Captured with')",
        timeout=5000,
    )
    assert "No stack captured" not in page.inner_text("#stack")
    assert page.locator("#stack *").count() == 0
    # The timeline reads as words, not JSON.
    timeline = page.inner_text("#timeline")
    assert "{" not in timeline and "}" not in timeline and '"' not in timeline
    killed = page.locator('.timeline li[data-kind="killed"] .detail').inner_text()
    assert re.match(r"signal SIGKILL sent \d+\.\d ms after the deadline, stack by ", killed), killed
    assert page.inner_text("#stack-title") == "Stack captured before the kill"
    page.wait_for_function("document.getElementById('stack').textContent !== 'loading…'")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "timer-killed.png"), full_page=True)
    page.close()


def test_screenshots_at_1400_and_800_pixels_without_horizontal_scrolling(
    page: Page, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    plans = [
        ("train.py#142 forward", 45),
        ("train.py#188 all_reduce", 6),
        ("/srv/jobs/llama-7b/src/trainer/distributed/data_parallel/loop.py:211 all_gather", 90),
        ("loader.py#33 fetch_batch", 300),
        ("eval.py#12", 0.5),
        ("ckpt.py#77 save", 0.8),
    ]
    for scope, seconds in plans:
        process = spawn_sleeper()
        sleepers.append(process)
        arm(service, process.pid, scope, seconds)
    page.locator('[data-state="killed"]').nth(1).wait_for(timeout=5000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 800, "height": 900})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "dashboard-800.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def state_of(base_url: str, timer_id: int) -> str:
    return str(httpx.get(f"{base_url}/timers/{timer_id}").json()["state"])


def test_with_javascript_off_the_first_paint_shows_the_active_timers(
    browser: Browser, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1400, "height": 900}
    )
    page = context.new_page()
    page.goto(service.url + "/")
    # Nothing armed yet: then, and only then, the page says so.
    assert page.locator("#active-empty").is_visible()
    assert page.locator("#active-table tbody tr").count() == 0

    timer_id = arm(service, sleeper.pid, "train.py#42 forward", 120)
    page.reload()
    row = page.locator(f'#active-table tr[data-timer-id="{timer_id}"][data-state="active"]')
    assert row.count() == 1
    assert page.locator("[data-timer-id]").count() == 1
    assert not page.locator("#active-empty").is_visible()
    assert "No active timers" not in page.inner_text("main")
    assert re.fullmatch(r"[12]m \d\ds", row.locator(".countdown").inner_text())
    assert row.locator(".scope").inner_text() == "train.py#42 forward"
    assert row.locator(".scope").get_attribute("href") == f"/ui/timers/{timer_id}"
    assert page.inner_text("#count-active") == "1"
    assert page.locator("#health").get_attribute("data-status") == "ok"
    # The chart is drawn by the script alone, so it says it is loading, never "none".
    assert page.inner_text("#chart") == "loading…"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-no-js.png"), full_page=True)
    context.close()


# The shape of an element: its tag, classes and children, without text or data.
SKELETON = """(node) => {
  const skel = (n) =>
    n.tagName + "." + [...n.classList].sort().join(".") + "(" + [...n.children].map(skel) + ")";
  return [...node.children].map(skel).join(" ");
}"""


def test_the_script_adopts_the_server_rendered_rows_without_duplicating_them(
    browser: Browser, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    active, observed = spawn_sleeper(), spawn_sleeper()
    sleepers += [active, observed]
    active_id = arm(service, active.pid, "adopted", 120)
    body = {"pid": observed.pid, "scope_id": "ended", "expires_in": 0.2, "signal": 0}
    ended_id = int(httpx.post(service.url + "/timers", json=body).json()["id"])
    assert wait_until(lambda: state_of(service.url, ended_id) == "expired")

    context = browser.new_context()
    page = context.new_page()
    # Hold the script's polls back until the server's rows are marked and measured.
    polls_allowed = threading.Event()
    page.route(
        "**/dashboard/state*",
        lambda route: route.continue_() if polls_allowed.is_set() else route.abort(),
    )
    page.goto(service.url + "/")
    rows = {
        timer_id: page.locator(f'[data-timer-id="{timer_id}"]')
        for timer_id in (active_id, ended_id)
    }
    server_shapes = {}
    for timer_id, row in rows.items():
        assert row.count() == 1
        row.evaluate("row => { row.fromServer = true; }")
        server_shapes[timer_id] = row.evaluate(SKELETON)
    polls_allowed.set()
    page.wait_for_function(
        f"document.querySelector('[data-timer-id=\"{active_id}\"]').timer !== undefined"
    )
    page.locator("#chart svg").wait_for()
    for timer_id, row in rows.items():
        assert row.count() == 1, f"timer {timer_id} is shown twice"
        assert row.evaluate("row => row.fromServer") is True, "the script replaced the row"
    assert page.locator("#active-table tbody tr").count() == 1
    assert page.locator("#ends-table tbody tr").count() == 1
    # The rows the server rendered have exactly the cells the script builds.
    built_active = page.evaluate(
        f"""() => {{
        const timer = document.querySelector('[data-timer-id="{active_id}"]').timer;
        const row = buildActive(timer); updateActive(row, timer);
        return ({SKELETON})(row);
    }}"""
    )
    assert built_active == server_shapes[active_id]
    built_ended = page.evaluate(
        f"""async () => {{
        const state = await (await fetch("/dashboard/state")).json();
        const timer = state.recent_ends.find((t) => t.id === {ended_id});
        const row = buildEnded(timer); updateEnded(row, timer);
        return ({SKELETON})(row);
    }}"""
    )
    assert built_ended == server_shapes[ended_id]
    assert page.locator(f'[data-timer-id="{ended_id}"] .badge').inner_text() == "expired"
    context.close()


def test_a_long_scope_keeps_its_start_and_its_tail_with_the_whole_on_hover(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    scope = "/home/alice/experiments/llm/very/deep/package/tree/trainer/loop.py:142 all_reduce"
    timer_id = arm(service, sleeper.pid, scope, 120)
    link = appeared(page, f'[data-timer-id="{timer_id}"] .scope')
    shown = link.inner_text()
    assert shown == middle_ellipsis(scope)  # the script cuts it as the server does
    assert shown.startswith("/home/alice/") and shown.endswith("loop.py:142 all_reduce")
    assert "…" in shown and len(shown) < len(scope)
    assert link.get_attribute("title") == scope
    # Nothing more is cut off by the cell: the tail is really on screen.
    assert link.evaluate("a => a.scrollWidth <= a.clientWidth")


def test_an_observe_only_timer_page_says_no_signal_was_sent(
    browser: Browser, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    body = {"pid": sleeper.pid, "scope_id": "watched", "expires_in": 0.3, "signal": 0}
    timer_id = int(httpx.post(service.url + "/timers", json=body).json()["id"])
    assert wait_until(lambda: state_of(service.url, timer_id) == "expired")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{service.url}/ui/timers/{timer_id}")
    appeared(page, f'[data-timer-id="{timer_id}"][data-state="expired"]')
    page.wait_for_function("document.getElementById('health').textContent === 'connected'")
    page.wait_for_function("document.getElementById('stack').textContent !== 'loading…'")
    assert page.inner_text("#stack-title") == (
        "Stack captured at expiry (observe only, no signal sent)"
    )
    text = page.inner_text("main")
    assert "before the kill" not in text and "before the signal" not in text
    assert page.inner_text("#f-signal") == "observe only"
    assert "no signal was sent" in page.inner_text("#stack-method")
    expired = page.locator('.timeline li[data-kind="expired"] .detail').inner_text()
    assert expired.startswith("observe only, ") and "{" not in expired
    assert sleeper.poll() is None  # observe only: the worker lives on
    page.screenshot(path=str(ARTIFACTS / "timer-observe-only.png"), full_page=True)
    page.close()


def test_the_chart_axes_have_times_and_counts_a_person_can_read(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    arm(service, sleeper.pid, "charted", 120)
    page.wait_for_function(
        "[...document.querySelectorAll('#chart rect.series')].length > 0", timeout=5000
    )
    labels = page.locator("#chart text.axis-label").all_text_contents()
    clock_times = [label for label in labels if re.fullmatch(r"\d\d:\d\d", label)]
    assert 3 <= len(clock_times) <= 4, labels  # a quarter-hour each
    assert "now" in labels and "0" in labels
    assert any(label.isdigit() and int(label) >= 1 for label in labels)
    smallest = page.evaluate(
        "Math.min(...[...document.querySelectorAll('#chart text')]"
        ".map((t) => t.getBoundingClientRect().height))"
    )
    assert smallest >= 11, f"axis text is {smallest:.1f} px tall"
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#chart").screenshot(path=str(ARTIFACTS / "chart.png"))


# ---- behind a proxy, under a path prefix ---------------------------------------------------


class BehindProxy:
    """What nginx's ``location /prefix/ { proxy_pass http://app/; }`` in front of
    ``uvicorn --root-path /prefix`` amounts to: uvicorn puts its root path in front of
    the path it gets, so the one the browser sent arrives with the prefix twice; the
    proxy would have taken one off. A request outside the prefix would never reach
    the service: it gets a 404 here."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            doubled = self.prefix + self.prefix
            path: str = scope["path"]
            if path != doubled and not path.startswith(doubled + "/"):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"outside the prefix"})
                return
            raw: bytes = scope["raw_path"]
            scope = {
                **scope,
                "path": path[len(self.prefix) :],
                "raw_path": raw[len(self.prefix) :],
            }
        await self.app(scope, receive, send)


@pytest.fixture
def prefixed_url(tmp_path: Path) -> Iterator[str]:
    """The real service in uvicorn with ``root_path="/prefix"``, reached at /prefix/."""
    uvicorn = pytest.importorskip("uvicorn")
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'prefixed.db'}"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            BehindProxy(app, "/prefix"),
            host="127.0.0.1",
            port=port,
            root_path="/prefix",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=30)
    yield f"http://127.0.0.1:{port}/prefix"
    server.should_exit = True
    thread.join(15)


def test_under_a_path_prefix_every_request_of_the_pages_stays_under_it(
    browser: Browser, prefixed_url: str, sleeper: subprocess.Popen[bytes]
) -> None:
    context = browser.new_context()
    page = context.new_page()
    requests: list[tuple[str, int]] = []
    page.on("response", lambda response: requests.append((response.url, response.status)))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(prefixed_url + "/")
    page.wait_for_function("document.getElementById('health').textContent === 'healthy'")
    # Armed after the page opened: it can only appear through the script's own fetch.
    body = {"pid": sleeper.pid, "scope_id": "behind the proxy", "expires_in": 120}
    response = httpx.post(prefixed_url + "/timers", json=body)
    assert response.status_code == 201, response.text
    timer_id = response.json()["id"]
    row = appeared(page, f'[data-timer-id="{timer_id}"][data-state="active"]')
    assert page.locator("link[rel=stylesheet]").evaluate("l => l.sheet.cssRules.length") > 10
    row.locator(".scope").click()
    page.wait_for_url(f"{prefixed_url}/ui/timers/{timer_id}")
    page.wait_for_function("document.getElementById('health').textContent === 'connected'")
    assert page.inner_text("#f-scope") == "behind the proxy"
    page.click("text=← all timers")
    page.wait_for_url(prefixed_url + "/")
    for name in ("API", "metrics", "health"):
        href = page.get_attribute(f"nav a:text-is('{name}')", "href")
        assert href is not None and href.startswith("/prefix/")
        assert httpx.get(prefixed_url.removesuffix("/prefix") + href).status_code == 200
    paths = [url.split("/", 3)[3] for url, _ in requests]
    assert paths and all(path.startswith("prefix/") for path in paths), paths
    failed = [(url, status) for url, status in requests if status >= 400]
    assert failed == [], failed
    assert any("/prefix/dashboard/state" in url for url, _ in requests)
    assert any(f"/prefix/dashboard/timers/{timer_id}" in url for url, _ in requests)
    assert errors == [], errors
    context.close()
