"""One attempt to tell one channel: the signed webhook for ``http(s)://`` URLs, the
notification library (``app.notify.library``) for every other kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app.notify.channels import is_webhook
from app.notify.library import send_with_library
from app.notify.webhook import SEND_LIMIT, Outcome, post_signed

__all__ = ["Deliver", "deliver"]

# (url, secret, delivery id, body, seconds it may take at most) -> how it went
Deliver = Callable[[str, str | None, str, dict[str, Any], float], Outcome]


def deliver(
    url: str,
    secret: str | None,
    delivery_id: str,
    body: dict[str, Any],
    limit: float = SEND_LIMIT,
) -> Outcome:
    if is_webhook(url):
        encoded = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return post_signed(url, secret, delivery_id, encoded, limit)
    title = f"timer-service: {body['kind']} on {body['node']}"
    return send_with_library(url, title, f"{body['summary']}\n\n{body['url']}", limit)
