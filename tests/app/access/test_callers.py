"""Caller identity from the kernel, and the rule of who may act on which process."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from app.access import callers
from app.access.callers import Caller, authorize, current_caller_from, is_privileged, tcp_peer_uid
from app.access.http_protocol import peer_of
from app.access.request_limits import host_name
from timer_core.diagnosis import established_owner

IPAddress = IPv4Address | IPv6Address


@pytest.fixture
def connected() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A real loopback connection: (the server's end, the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        yield server, client
        client.close()
        server.close()


def test_the_kernel_names_the_owner_of_a_loopback_peer(
    connected: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = connected
    assert tcp_peer_uid(server.getpeername(), server.getsockname()) == os.getuid()


def test_a_dual_stack_listener_still_finds_a_v4_peer() -> None:
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as ln:
        client = socket.create_connection(("127.0.0.1", ln.getsockname()[1]))
        server, _ = ln.accept()
        with client, server:
            peer, local = server.getpeername()[:2], server.getsockname()[:2]
            assert peer[0] == "::ffff:127.0.0.1"
            assert tcp_peer_uid(peer, local) == os.getuid()


def test_a_closed_connection_or_another_port_names_nobody(
    connected: tuple[socket.socket, socket.socket],
) -> None:
    server, client = connected
    peer, local = server.getpeername(), server.getsockname()
    assert tcp_peer_uid((peer[0], peer[1] + 1 if peer[1] < 65535 else 1), local) is None
    client.close()
    server.close()
    assert tcp_peer_uid(peer, local) is None


def ends(sock: socket.socket) -> tuple[tuple[IPAddress, int], tuple[IPAddress, int]]:
    """(own end, other end) of a connected socket, as sock_diag takes them."""
    own, other = sock.getsockname(), sock.getpeername()
    return (ip_address(own[0]), own[1]), (ip_address(other[0]), other[1])


def soon() -> float:
    return time.monotonic() + 1.0


def test_sock_diag_finds_the_one_socket_by_its_addresses(
    connected: tuple[socket.socket, socket.socket],
) -> None:
    _, client = connected
    try:
        assert established_owner(*ends(client), soon())[0] == os.getuid()
    except OSError as error:
        pytest.skip(f"no NETLINK_SOCK_DIAG for TCP here: {error}")
    (own, own_port), other = ends(client)
    with pytest.raises(OSError):  # no such socket: the caller falls back to the tables
        established_owner((own, own_port + 1 if own_port < 65535 else 1), other, soon())


def test_the_tables_are_not_read_when_the_kernel_answers(
    connected: tuple[socket.socket, socket.socket],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, client = connected
    try:
        established_owner(*ends(client), soon())
    except OSError as error:
        pytest.skip(f"no NETLINK_SOCK_DIAG for TCP here: {error}")
    monkeypatch.setattr(callers, "_PROC_NET", tmp_path)  # empty: nothing to find there
    assert tcp_peer_uid(server.getpeername(), server.getsockname()) == os.getuid()


def test_without_sock_diag_the_tables_still_name_the_owner(
    connected: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_: object) -> tuple[int, int]:
        raise OSError(errno.EPROTONOSUPPORT, "no sock_diag")

    monkeypatch.setattr(callers, "established_owner", unavailable)
    server, _ = connected
    assert tcp_peer_uid(server.getpeername(), server.getsockname()) == os.getuid()


def test_a_remote_peer_is_never_looked_up() -> None:
    assert tcp_peer_uid(("192.0.2.7", 40000), ("127.0.0.1", 8000)) is None


def test_the_kernel_table_is_parsed_as_the_kernel_prints_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    (tmp_path / "tcp").write_text(
        header
        # 127.0.0.1:40000 -> 127.0.0.1:8000, established, uid 1234
        + "   0: 0100007F:9C40 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1234\n"
        # the same pair, but only listening: not a connection
        + "   1: 0100007F:9C41 0100007F:1F40 0A 00000000:00000000 00:00000000 00000000  99\n"
        + "garbage line\n"
    )
    # ::1 port 40001 -> ::1 port 8000, uid 4321
    (tmp_path / "tcp6").write_text(
        header + "   0: 00000000000000000000000001000000:9C41 00000000000000000000000001000000:1F40"
        " 01 00000000:00000000 00:00000000 00000000  4321\n"
    )
    monkeypatch.setattr(callers, "_PROC_NET", tmp_path)
    assert tcp_peer_uid(("127.0.0.1", 40000), ("127.0.0.1", 8000)) == 1234
    assert tcp_peer_uid(("127.0.0.1", 40001), ("127.0.0.1", 8000)) is None
    assert tcp_peer_uid(("::1", 40001), ("::1", 8000)) == 4321


def test_a_unix_socket_peer_is_known_by_its_credentials() -> None:
    left, right = socket.socketpair()

    class Transport:
        def get_extra_info(self, name: str) -> object:
            return right if name == "socket" else None

    with left, right:
        peer = peer_of(Transport())  # type: ignore[arg-type]
    assert (peer.uid, peer.channel) == (os.getuid(), "unix")
    assert peer.address == f"pid {os.getpid()}"


def test_a_request_without_a_known_peer_is_unidentified_unless_it_has_the_token() -> None:
    scope = {"client": ("203.0.113.9", 5000), "server": ("0.0.0.0", 8000), "state": {}}
    anonymous = current_caller_from(scope, "s3cret", "")
    assert anonymous.uid is None and not anonymous.admin
    assert current_caller_from(scope, "s3cret", "Bearer s3cret").admin
    assert not current_caller_from(scope, "s3cret", "Bearer s3cre").admin
    assert not current_caller_from(scope, None, "Bearer anything").admin


def test_the_connection_peer_wins_over_the_request_address() -> None:
    # A proxy-headers middleware may rewrite scope["client"]; the peer read from the
    # socket when the connection was made is what counts.
    known = Caller(1001, "tcp", "127.0.0.1:40000")
    scope: dict[str, object] = {"client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    scope["state"] = {callers.PEER_STATE_KEY: known}
    assert current_caller_from(scope, None, "").uid == 1001


@pytest.mark.parametrize(
    ("caller", "owner", "allowed"),
    [
        (Caller(1001, "tcp", ""), 1001, True),
        (Caller(1001, "tcp", ""), 0, False),
        (Caller(1001, "unix", ""), 1002, False),
        (Caller(1001, "tcp", ""), None, False),
        (Caller(0, "tcp", ""), 1002, True),
        (Caller(None, "remote", ""), 1001, False),
        (Caller(None, "remote", "", admin=True), 0, True),
        (Caller(1001, "tcp", "", admin=True), 0, True),
    ],
)
def test_who_may_act_on_whose_process(caller: Caller, owner: int | None, allowed: bool) -> None:
    reason = authorize(caller, owner, "release timer 7")
    assert (reason is None) is allowed
    if reason is not None:
        assert "release timer 7" in reason and caller.describe() in reason


def test_root_and_the_service_user_are_privileged() -> None:
    assert is_privileged(Caller(0, "tcp", ""))
    assert is_privileged(Caller(os.geteuid(), "tcp", ""))
    assert not is_privileged(Caller(None, "remote", ""))


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8000", "localhost"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("evil.example:80", "evil.example"),
        ("", ""),
    ],
)
def test_host_names_are_read_without_their_port(header: str, name: str) -> None:
    assert host_name(header) == name
