"""Channels and silences as the API takes and shows them (contract 11), and the one
rule of what a channel or a silence matches.

A channel's URL is shown only as its scheme and host: a webhook's path, a query, a
``user:password@`` and every part of a notification library's URL (``slack://A/B/C``
is three tokens) can be the secret, so none of it is ever shown back, logged or put in
a metric. Its secret is never shown at all.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.notify.library import not_understood

__all__ = [
    "EVENTS",
    "ChannelCreate",
    "ChannelPublic",
    "Match",
    "Subject",
    "is_webhook",
    "matches",
    "shown_url",
    "wants",
]

EVENTS = ("kill", "incident", "unkillable", "node_down", "loss", "overdue", "straggler")
EventName = Literal["kill", "incident", "unkillable", "node_down", "loss", "overdue", "straggler"]
_WEBHOOK_SCHEMES = ("http", "https")
# Not notification services: a local file, or a way to reach local resources.
_NEVER = frozenset({"file", "ftp", "ftps", "data", "javascript", "unix", "gopher"})
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Match(BaseModel):
    """What a channel or a silence applies to: every field given must match."""

    model_config = ConfigDict(extra="forbid")

    job: Label | None = None
    node: Label | None = None
    uid: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    scope_prefix: Label | None = None


class Subject(BaseModel):
    """What a notification is about, as a match sees it."""

    job: str | None
    node: str
    uid: int | None
    scope: str | None


def matches(match: Match, subject: Subject) -> bool:
    return (
        (match.job is None or match.job == subject.job)
        and (match.node is None or match.node == subject.node)
        and (match.uid is None or match.uid == subject.uid)
        and (
            match.scope_prefix is None
            or (subject.scope is not None and subject.scope.startswith(match.scope_prefix))
        )
    )


def wants(events: list[str], kind: str) -> bool:
    """Whether a channel subscribed to ``events`` is told a notification of ``kind``. An
    incident is the kills of a hung job told once, so a channel of kills gets it too."""
    if kind == "incident":
        return "incident" in events or "kill" in events
    return kind in events


def is_webhook(url: str) -> bool:
    return urlsplit(url).scheme.lower() in _WEBHOOK_SCHEMES


def shown_url(url: str) -> str:
    """``url`` as it may be shown: a webhook's scheme and host (and port), the rest
    elided; only the scheme of any other kind of URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _WEBHOOK_SCHEMES:
        return f"{scheme}://…"
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{scheme}://{host}{f':{port}' if port else ''}{rest}"


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    events: Annotated[list[EventName], Field(min_length=1, max_length=len(EVENTS))]
    match: Match = Field(default_factory=Match)
    secret: Annotated[str, StringConstraints(min_length=16, max_length=256)] | None = None

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if any(ord(character) < 33 for character in url):
            raise ValueError("the URL holds spaces or control characters")
        if parts.scheme.lower() in _WEBHOOK_SCHEMES:
            if not parts.hostname:
                raise ValueError("a webhook URL needs a host, e.g. https://hooks.example/x")
            try:
                port = parts.port
            except ValueError:
                port = 0
            if port == 0:
                # Named without the URL: its user:password@ may be the secret.
                raise ValueError(
                    "the URL's port is not a number from 1 to 65535: write it as "
                    "https://host:8443/path, or leave it out for the scheme's own"
                )
            return url
        if not parts.scheme or parts.scheme.lower() in _NEVER:
            raise ValueError(
                f"unsupported URL scheme {parts.scheme[:20]!r}: give an https:// (or http://) "
                "webhook, or a notification library URL such as mailto:// or slack://"
            )
        problem = not_understood(url)
        if problem is not None:
            raise ValueError(problem)
        return url

    @field_validator("events")
    @classmethod
    def _once_each(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class ChannelPublic(BaseModel):
    id: int
    name: str
    url: str  # shown_url: never the credentials
    events: list[str]
    match: Match
    secret_set: bool
    created_at: float
    created_by: str

    @classmethod
    def of(cls, row: Any) -> ChannelPublic:
        return cls(
            id=row.id,
            name=row.name,
            url=shown_url(row.url),
            events=json.loads(row.events),
            match=Match.model_validate_json(row.match),
            secret_set=bool(row.secret),
            created_at=row.created_at,
            created_by=row.created_by,
        )
