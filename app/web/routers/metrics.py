"""``/metrics``: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
    },
)
def metrics(service: ServiceDep) -> Response:
    """Open to read, like the other reads. A scraper that sends a bearer token
    (Prometheus's ``authorization`` scrape option) must send the right one: refused
    before any route, like every request with a wrong one
    (``app.access.request_limits.WrongToken``)."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
