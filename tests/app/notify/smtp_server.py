"""A real SMTP server on loopback (aiosmtpd) that keeps the mail it is sent, for the
notification library's tests."""

from __future__ import annotations

import contextlib
import email
import email.policy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.app.service_process import free_port

__all__ = ["Mailbox", "mailbox", "running_mailbox", "text_of"]


@dataclass
class Mailbox:
    port: int
    mail: list[EmailMessage] = field(default_factory=list)

    def url(self, to: str = "ops@example.com") -> str:
        """The channel URL (Apprise's syntax) that sends here, unencrypted."""
        return f"mailto://127.0.0.1:{self.port}?from=timers@example.com&to={to}&mode=insecure"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mail.append(parsed)
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.mail) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.mail)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@contextlib.contextmanager
def running_mailbox() -> Iterator[Mailbox]:
    """An SMTP server on a free loopback port, for as long as the block runs."""
    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with running_mailbox() as box:
        yield box
