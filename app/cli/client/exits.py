"""The client's exit codes, one per kind of outcome a script may act on, and the
error that carries one up to the command's exit (with the line to print)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["EXIT_CODES_HELP", "ClientError", "ExitCode", "exit_for_status"]


class ExitCode(IntEnum):
    OK = 0
    NOT_FOUND = 1  # 404: no such timer, job, incident or stack
    USAGE = 2  # a wrong flag or value (argparse's own code), or one the service refused (422)
    UNREACHABLE = 3  # no service answered at the URL or socket
    REFUSED = 4  # 401, 403, 421: the service will not tell this caller
    SERVICE_ERROR = 5  # 5xx (503: its database is away), or an answer that is not its own


EXIT_CODES_HELP = """\
exit codes:
  0  ok
  1  not found (404): no such timer, job, incident or stack
  2  usage error: a wrong flag or value (also one the service refused, 422)
  3  service unreachable at the URL or socket tried
  4  refused (401, 403, 421): the message says why and what to do
  5  service error (5xx; 503 while its database is away)

connection: --url URL (default $TIMER_SERVICE_URL, else http://127.0.0.1:8000), or
--uds PATH (the service's Unix socket: the service knows you by your uid). The admin
token comes from --token-file PATH (mode 600) or $TIMER_SERVICE_TOKEN, never from the
command line."""


class ClientError(Exception):
    """What went wrong, said for the user (``message``), and the exit code it means."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exit_for_status(status: int) -> ExitCode:
    """The exit code of an HTTP error status."""
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (401, 403, 421):
        return ExitCode.REFUSED
    if status in (400, 409, 422):
        # The request was wrong (a value, or a job id several users share: --uid).
        return ExitCode.USAGE
    return ExitCode.SERVICE_ERROR
