"""How the client reaches the service: ``--url`` (or ``TIMER_SERVICE_URL``), or the
service's Unix socket with ``--uds`` (where it knows the caller by ``SO_PEERCRED``);
the admin token from ``--token-file`` or ``TIMER_SERVICE_TOKEN``, never a flag's value
(``ps`` shows every user the command line). Every failure becomes a ``ClientError``
that names the URL or socket tried and what to do."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.cli.client.exits import ClientError, ExitCode, exit_for_status
from app.settings import read_token_file

__all__ = ["DEFAULT_URL", "Connection", "add_connection_flags"]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "TIMER_SERVICE_URL"
TOKEN_VARIABLE = "TIMER_SERVICE_TOKEN"
# Over a Unix socket there is no host to name; the service does not check it there.
_SOCKET_BASE = "http://localhost"


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        help=f"the service's URL (default ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--uds",
        metavar="PATH",
        help="talk over the service's Unix socket (serve --uds PATH): it knows you by your uid",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"read the admin token from this file (mode 600); or set ${TOKEN_VARIABLE}",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up on an answer after this long (default 10)",
    )


@dataclass(frozen=True)
class Connection:
    url: str
    uds: str | None
    token: str | None
    timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Connection:
        url = (args.url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")
        if args.token_file:
            try:
                token: str | None = read_token_file(args.token_file)
            except SystemExit as refusal:  # its message says what to fix
                # serve's wording starts "timer-service: "; the client names itself
                reason = str(refusal).removeprefix("timer-service: ")
                raise ClientError(ExitCode.USAGE, reason) from None
        else:
            token = os.environ.get(TOKEN_VARIABLE) or None
        return cls(url, args.uds, token, args.timeout)

    @property
    def target(self) -> str:
        """Where the requests go, as an error names it."""
        return f"the Unix socket {self.uds}" if self.uds else self.url

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.token and not self.uds and _in_clear_to_another_host(self.url):
            print(
                f"timer-service: warning: the admin token goes unencrypted to {self.url}; "
                "anyone on the network between can read it: use an https:// URL (a TLS "
                "proxy in front of the service) or, on the service's host, --uds",
                file=sys.stderr,
            )
        transport = httpx.HTTPTransport(uds=self.uds) if self.uds else None
        try:
            return httpx.Client(
                base_url=_SOCKET_BASE if self.uds else self.url,
                headers=headers,
                timeout=self.timeout,
                transport=transport,
            )
        except (httpx.InvalidURL, ValueError) as error:
            raise ClientError(ExitCode.USAGE, self._bad_url(error)) from None

    def get(self, client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON the service answered to ``GET path``; a ClientError for anything else."""
        response = self.get_response(client, path, params)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                ExitCode.SERVICE_ERROR,
                f"{self.target} answered {path} with something that is not JSON: is it the "
                "timer service? Check --url",
            ) from None

    def get_response(
        self, client: httpx.Client, path: str, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """The service's 2xx answer to ``GET path``; a ClientError for anything else."""
        try:
            response = client.get(path, params=_given(params))
        except httpx.TimeoutException:
            raise ClientError(
                ExitCode.UNREACHABLE,
                f"the timer service at {self.target} did not answer within {self.timeout:g} s: "
                "is it overloaded or stopped? Try again, or pass a longer --timeout",
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
            raise ClientError(ExitCode.USAGE, self._bad_url(error)) from None
        except httpx.TransportError as error:
            raise ClientError(ExitCode.UNREACHABLE, self._unreachable(error)) from None
        if response.is_success:
            return response
        raise ClientError(exit_for_status(response.status_code), _refusal(response))

    def _unreachable(self, error: Exception) -> str:
        reason = str(error) or type(error).__name__
        if self.uds:
            return (
                f"cannot reach the timer service on the Unix socket {self.uds} ({reason}): "
                f"is `timer-service serve --uds {self.uds}` running? Start it, or pass the "
                "socket it listens on"
            )
        return (
            f"cannot reach the timer service at {self.url} ({reason}): is `timer-service "
            f"serve` running? Start it, or pass --url (or set {URL_VARIABLE}) to where it runs"
        )

    def _bad_url(self, error: Exception) -> str:
        return (
            f"--url {self.url!r} is not a URL the client can use ({error}): give one like "
            f"{DEFAULT_URL}"
        )


def _in_clear_to_another_host(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or host == "localhost":
        return False
    try:
        # Not app.access.callers' is_loopback: that module brings FastAPI with it.
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it may resolve anywhere


def _given(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The query parameters that were given (a filter left out is not sent)."""
    if params is None:
        return None
    return {name: value for name, value in params.items() if value is not None}


def _refusal(response: httpx.Response) -> str:
    """The service's error, as one line: its status and its ``detail``."""
    status = f"{response.status_code} {response.reason_phrase}".strip()
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        # FastAPI's validation errors: where (a query parameter), and what is wrong.
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(part) for part in item.get("loc", []) if part != "query")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
        detail = "; ".join(parts)
    if not detail:
        detail = response.text[:200].strip() or "no detail"
    return f"the service answered {status}: {detail}"
