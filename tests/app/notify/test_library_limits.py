"""The notification library's channels against a hostile receiver: a redirect is never
followed (to another host it would carry the channel's tokens and the notification
there), and a URL that asks for redirects is refused."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.notify.library import send_with_library
from tests.app.notify.receiver import Receiver, start_receiver


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    internal = start_receiver()  # an address only this host reaches
    try:
        receiver.statuses.append(307)
        receiver.headers_out["location"] = f"http://localhost:{internal.port}/internal-only"
        outcome = send_with_library(f"ntfy://127.0.0.1:{receiver.port}/topic", "t", "secret body")
        assert len(receiver.wait_for(1)) == 1  # the channel's own receiver was asked
        assert not outcome.delivered
        assert internal.wait_for(1, timeout=1.0) == []  # and nothing went on
    finally:
        internal.close()


def test_a_url_asking_for_redirects_is_refused(client: TestClient, receiver: Receiver) -> None:
    for option in ("redirect=yes", "REDIRECT=true", "priority=high&redirect=1"):
        url = f"ntfy://127.0.0.1:{receiver.port}/topic?{option}"
        made = client.post("/channels", json={"name": "n", "url": url, "events": ["kill"]})
        assert made.status_code == 422, made.text
        assert "redirect" in made.text
        # One stored before the check (or by hand) is not sent either.
        outcome = send_with_library(url, "t", "b")
        assert not outcome.delivered and not outcome.retry
    assert receiver.got == []
