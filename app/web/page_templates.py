"""The Jinja2 environment every page renders with: the dashboard's filters and
globals, and the root path each link and asset URL starts with. One environment, so
the dashboard's and the jobs' pages render numbers and times the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from app.web.dashboard_text import (
    NOTHING,
    SCOPE_CHARS,
    duration,
    middle_ellipsis,
    signal_name,
    utc_iso,
    utc_text,
)

__all__ = ["PACKAGE_DIR", "STATIC_DIR", "path_segment", "render_page", "templates", "when"]

# Package data: found beside the code wherever the package is installed.
PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"


def _root(request: Request) -> dict[str, Any]:
    # The prefix the app is served under (uvicorn --root-path), never the Host header.
    return {"root": request.scope.get("root_path", "").rstrip("/")}


def when(unix: float | None) -> Markup:
    """The ``when`` filter, for every time a page shows: ``<time datetime="…Z">2025-05-01
    04:21:29 UTC</time>``, or a dash for none. ``TS.timeElement`` in common.js builds the
    same element for what the scripts update. Markup is safe here: both strings are made
    from a number, never from text a worker chose."""
    if not unix:
        return Markup(NOTHING)
    return Markup(f'<time datetime="{utc_iso(unix)}">{utc_text(unix)}</time>')


def path_segment(text: str) -> str:
    """``text`` as one segment of a URL's path, every ``/`` escaped too (as
    ``encodeURIComponent`` in the scripts). Jinja's ``urlencode`` keeps ``/``, so a job
    id a worker chose, ``x/../victim``, made a link the browser resolves to another
    job's page (``/ui/jobs/victim``)."""
    return quote(text, safe="")


# Autoescaping is on for .html (Jinja2Templates' default): job ids, scopes and node
# names are strings workers chose, and are shown as text.
templates = Jinja2Templates(directory=PACKAGE_DIR / "templates", context_processors=[_root])
templates.env.filters.update(
    middle=middle_ellipsis,
    duration=duration,
    signal_name=signal_name,
    when=when,
    path_segment=path_segment,
)
templates.env.globals.update(SCOPE_CHARS=SCOPE_CHARS)


def render_page(
    request: Request, page: str, found: bool, now: float | None, **context: Any
) -> HTMLResponse:
    """``<page>.html``, or the same page saying what was not found with a 404."""
    return templates.TemplateResponse(
        request,
        f"{page}.html",
        {"page": page, "now": now, **context},
        status_code=200 if found else 404,
    )
