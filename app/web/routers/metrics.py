"""``/metrics``: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.db.models import ErrorMessage
from app.deps import ServiceDep, check_token

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"model": ErrorMessage, "description": "A bearer token was sent and is wrong"},
    },
)
def metrics(request: Request, service: ServiceDep) -> Response:
    """Open to read, like the other reads. A scraper that sends a bearer token
    (Prometheus's ``authorization`` scrape option) must send the right one."""
    if "authorization" in request.headers:
        check_token(request, service)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
