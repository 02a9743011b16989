"""Every channel that is not a plain webhook goes through Apprise (contract 11):
``mailto://``, ``slack://``, ``msteams://``, ``pagerduty://``, ``tgram://``, ``ntfy://``
and about a hundred more, each one URL, kept up to date by people who follow those
services' APIs. Chosen over writing each format here (the issue's rule: our own code
is only the webhook, the Alertmanager push and the outbox) and over the other
libraries because it is the one that is both broad and actively maintained, is pure
Python with no service to run, and gives each call's outcome and log lines back
(``AppriseResult``), so one channel's failure is told apart from another's when
several send at once.

Kept safe:

- Apprise's own generic webhooks (``json://``, ``xml://``, ``form://``) are refused:
  a webhook goes through ours, signed, with no redirect to another host.
- No redirect is followed: Apprise (like requests under it) follows them by default,
  to any host, so a receiver could turn the root service's POST, with its tokens, to
  an address only this host reaches. ``_ASSET`` turns them off for every plugin, a
  URL's ``redirect=`` option (which would turn them back on) is refused, and each
  channel Apprise builds is checked to have them off before it sends.
- Apprise's log lines never reach the service's log (they can carry a URL's tokens);
  an attempt's warnings become the delivery's error with every piece of the URL
  (host, path, user, query values) blotted out.
- Each attempt is bounded by Apprise's connect and read timeouts, and as a whole by
  ``service_timeout`` (the webhook's ``SEND_LIMIT``): past it Apprise stops waiting and
  the attempt is a timeout, though its thread may still be reading. The sender's thread
  pool bounds how many run at once.
- Not bounded: the size of a service's answer. Apprise (through requests) reads each
  answer whole; a hostile service can make one attempt hold that much memory, for as
  long as the time limit lets it stream.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlsplit

import apprise

from app.notify.webhook import SEND_LIMIT, Outcome

__all__ = ["GENERIC_SCHEMES", "not_understood", "send_with_library"]

GENERIC_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
_ERROR_CHARS = 300
# Every channel's settings: no redirects, and a whole attempt within the send limit.
_ASSET = apprise.AppriseAsset(http_redirects=False, service_timeout=SEND_LIMIT)

# Apprise logs under "apprise": its lines stay out of the service's log (see above).
logging.getLogger("apprise").propagate = False


def not_understood(url: str) -> str | None:
    """Why ``url`` cannot be a library channel, or None if the library takes it."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in GENERIC_SCHEMES:
        return (
            f"{scheme}:// is the library's unsigned webhook: give an https:// (or http://) "
            "URL instead, which the service signs and sends itself"
        )
    if _asks_for_redirects(url):
        return (
            "the URL's redirect= option is refused: the service never follows a redirect "
            "(to another host it would carry the channel's tokens there); remove it"
        )
    if _loaded(url) is None:
        return (
            f"the notification library (Apprise) does not understand this {scheme[:20]}:// "
            "URL: see https://github.com/caronc/apprise/wiki for each service's syntax"
        )
    return None


def _asks_for_redirects(url: str) -> bool:
    return any(name.lower() == "redirect" for name, _ in parse_qsl(urlsplit(url).query))


def _loaded(url: str) -> apprise.Apprise | None:
    """Apprise holding ``url``'s channel with redirects off, or None if it cannot."""
    if _asks_for_redirects(url):
        return None
    sender = apprise.Apprise(asset=_ASSET)
    if not sender.add(url):
        return None
    # However the URL spelled it, no channel may follow a redirect.
    if any(getattr(server, "redirects", True) for server in sender):
        return None
    return sender


def _secret_pieces(url: str) -> list[str]:
    """Every part of ``url`` that may be a token, longest first."""
    parts = urlsplit(url)
    pieces = {parts.netloc, parts.hostname or "", parts.username or "", parts.password or ""}
    pieces.update(re.split(r"[/@:]", parts.netloc + parts.path))
    for name, value in parse_qsl(parts.query):
        pieces.update((name, value))
    return sorted((piece for piece in pieces if len(piece) >= 3), key=len, reverse=True)


def _blotted(text: str, url: str) -> str:
    for piece in _secret_pieces(url):
        text = text.replace(piece, "…")
    return text


def send_with_library(url: str, title: str, body: str, limit: float = SEND_LIMIT) -> Outcome:
    """One notification through Apprise, waited for at most ``limit`` seconds; its
    outcome, with no URL piece in the error."""
    sender = _loaded(url)
    if sender is None:
        return Outcome(
            False,
            "the notification library no longer takes the URL (it does not understand it, "
            "or it asks for redirects): give the channel a new one",
            False,
        )
    result = sender.notify(title=title, body=body, timeout=max(0.1, min(limit, SEND_LIMIT)))
    if bool(result):
        return Outcome(True)
    said = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
    reason = "; ".join(said) or f"the notification library said {result.status.name}"
    return Outcome(False, _blotted(reason, url)[:_ERROR_CHARS])
