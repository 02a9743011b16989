"""Request dependencies: the running service, a DB session, and the write token check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlmodel import Session

from .service import Service

__all__ = ["ServiceDep", "SessionDep", "check_token", "require_token"]


async def get_service(request: Request) -> Service:
    # async: a sync dependency would cost a thread-pool hop on every request.
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_session(service: ServiceDep) -> Iterator[Session]:
    with Session(service.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def require_token(request: Request, service: ServiceDep) -> None:
    """With a token configured, a write needs ``Authorization: Bearer <token>``."""
    check_token(request, service)


def check_token(request: Request, service: Service) -> None:
    expected = service.settings.token
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    # compare_digest takes constant time, so the token cannot be guessed byte by byte.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
