"""What a client does when its timer server cannot be reached: fail closed or fail open.

Torch's clients fail closed: a request that cannot reach the server raises, and the
training step dies with it. ``fail_open=True`` trades that for the other risk: the
step goes on, unwatched, until the server is back. The choice is the caller's, made
once when the client is built; the default stays torch's.

**Fail closed (the default).** A worker never runs a block that no one watches: if
the watchdog is away, the worker stops. Right when a hang costs more than a lost
step (a job that holds a thousand GPUs hung for hours), and what torch does.

**Fail open.** The block runs unguarded while the server is away: a hang in it then
is not killed. Right when the watchdog must never be the reason training stops (a
restart, an upgrade, a crash of the service). The client:

- logs one WARNING when an outage begins and one when it ends, never one per call;
- counts: ``failed_requests`` (every request that did not reach the server) and
  ``outages`` (how many began), public on the client;
- sends again, once the server answers, the releases it could not send: a timer
  armed just before the outage would otherwise stay armed, and a service that
  re-arms its timers after a restart would kill a worker that left its block long
  ago. It cannot help a service that restarts and reaps that timer before this
  worker's next request reaches it: that worker is killed, as a fail-closed one
  would have died at its failed release. It keeps at most ``MAX_KEPT_RELEASES``
  scopes, the first ones (a worker whose scope ids change each step would otherwise
  grow them for the whole outage, then send them all at once in a step); those
  dropped beyond are counted in the line that ends the outage.

Only a server that cannot be reached fails open (``ServerUnreachable``: refused or
lost connections, timeouts, 5xx answers, a FIFO with no reader or one that stays
full). A refusal that is the caller's to fix (bad input, 401, 403, a FIFO this user
may not open) raises in both modes: failing open there would hide, for the whole
run, that no timer was ever armed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["MAX_KEPT_RELEASES", "FailOpen", "FailOpenCounts", "ServerUnreachable"]

# Releases kept in an outage, first come: those of the timers armed before it began come
# first, and beyond a few hundred distinct scopes the rest are scope ids made per step,
# whose arms failed open too (a release of no timer is nothing). Also bounds how many
# requests the first answered one sends after an outage.
MAX_KEPT_RELEASES = 256


class ServerUnreachable(ConnectionError):
    """The request did not reach a server that could answer it (the message says why):
    what ``fail_open=True`` goes on after. Each client raises a subclass of its own
    (``TimerServiceUnreachable``, ``TimerFifoUnreachable``)."""


class FailOpen:
    """One client's policy and state for requests that cannot reach its server.

    ``server`` names the server in the log lines ("timer service at http://...").
    ``send_release(scope_id)`` sends one release; it is how the releases kept during
    an outage are sent again. Safe to share between threads.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        server: str,
        logger: logging.Logger,
        send_release: Callable[[str], None],
    ) -> None:
        self.enabled = enabled
        self._server = server
        self._logger = logger
        self._send_release = send_release
        self._lock = threading.Lock()
        self.failed_requests = 0
        self.outages = 0
        # Monotonic time the current outage began, and its failed requests; None: up.
        self._down_since: float | None = None
        self._failed_in_outage = 0
        self._unsent_releases: set[str] = set()
        self._dropped_releases = 0

    @property
    def down(self) -> bool:
        """Whether the last request failed open: the client then tries each request once,
        without the waits that are worth it only for a server that is there."""
        return self._down_since is not None

    def acquire(self, scope_id: str, send: Callable[[], None]) -> None:
        # An arm of a scope whose release is pending moves that same timer: its own
        # release, at the block's end, is the one to send.
        with self._lock:
            self._unsent_releases.discard(scope_id)
        self._send(send)

    def release(self, scope_id: str) -> None:
        if not self._send(lambda: self._send_release(scope_id)):
            with self._lock:
                if len(self._unsent_releases) < MAX_KEPT_RELEASES:
                    self._unsent_releases.add(scope_id)
                elif scope_id not in self._unsent_releases:
                    self._dropped_releases += 1

    def _send(self, send: Callable[[], None]) -> bool:
        """Send one request; False when it failed open. Fail closed, or a refusal that
        is the caller's fault: the error is raised as it came."""
        try:
            send()
        except ServerUnreachable as error:
            if not self.enabled:
                raise
            self._failed(error)
            return False
        self._reached()
        return True

    def _failed(self, error: ServerUnreachable) -> None:
        with self._lock:
            self.failed_requests += 1
            self._failed_in_outage += 1
            began = self._down_since is None
            if began:
                self._down_since = time.monotonic()
                self.outages += 1
        if began:
            self._logger.warning(
                "%s -- fail_open: going on with no timer armed until it answers again "
                "(a hang meanwhile is not killed); one line when it does",
                error,
            )

    def _reached(self) -> None:
        with self._lock:
            if self._down_since is None and not self._unsent_releases:
                return
            down_since, failed = self._down_since, self._failed_in_outage
            self._down_since, self._failed_in_outage = None, 0
            unsent = sorted(self._unsent_releases)
            self._unsent_releases.clear()
            dropped, self._dropped_releases = self._dropped_releases, 0
        if down_since is not None:
            # WARNING like the outage's line: with logging left unconfigured, Python
            # prints WARNING and above to stderr, and the two belong together.
            self._logger.warning(
                "%s is reachable again after %.1f s: %d requests failed open in this outage "
                "(%d in all, over %d outages); timers are armed again%s",
                self._server,
                time.monotonic() - down_since,
                failed,
                self.failed_requests,
                self.outages,
                (f"; sending {len(unsent)} releases that could not be sent" if unsent else "")
                + (
                    f" ({dropped} more, beyond the first {MAX_KEPT_RELEASES} scopes, dropped)"
                    if dropped
                    else ""
                ),
            )
        for scope_id in unsent:
            self.release(scope_id)


class FailOpenCounts:
    """What a client built with a ``FailOpen`` tells its caller about it: the mode it
    was built with and the counts. Mixed into each client, which sets ``_fail_open``."""

    _fail_open: FailOpen

    @property
    def fail_open(self) -> bool:
        return self._fail_open.enabled

    @property
    def failed_requests(self) -> int:
        """Requests that did not reach the server and failed open (0 when fail closed)."""
        return self._fail_open.failed_requests

    @property
    def outages(self) -> int:
        """How many times the server became unreachable while this client went on."""
        return self._fail_open.outages
