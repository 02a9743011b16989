"""How the terminal client reaches the real service, and what it says when it cannot:
a service down (exit 3, naming the URL or socket tried and what to do); a caller the
service cannot identify (from another address: exit 4, saying why) let in by the admin
token from ``TIMER_SERVICE_TOKEN`` or ``--token-file``; and ``--uds``, where the
service knows the caller by ``SO_PEERCRED``: root reads the stack the same request
from the other address may not.

The service listens on this host's non-loopback address (a caller from there is not
identified, as one from another host is not) and on a Unix socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.cli.client_cli import cli_many
from tests.app.service_process import ServiceProcess, free_port
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

TOKEN = "cli-test-token-1d2e"


def outward_address() -> str | None:
    """This host's address on the way out (no packet is sent), if not a loopback one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


ADDRESS = outward_address()


@dataclass
class Remote:
    service: ServiceProcess
    socket: Path
    token_file: Path
    killed_id: int
    stack: str


def over_socket(path: Path) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(path)),
        base_url="http://localhost",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    if ADDRESS is None:
        pytest.skip("no non-loopback IPv4 address on this host")
    if os.geteuid() != 0:
        pytest.skip("needs root: the service reads a root worker's stack")
    workdir = tmp_path_factory.mktemp("remote")
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    path = workdir / "ts.sock"
    service = ServiceProcess(
        workdir, "--host", ADDRESS, "--uds", str(path), "--token-file", str(token_file)
    )
    service.url = f"http://{ADDRESS}:{service.port}"
    service.start()
    worker = spawn_sleeper()
    try:
        with over_socket(path) as client:
            body = {"pid": worker.pid, "scope_id": "remote", "expires_in": 0.3}
            armed = client.post("/timers", json=body)
            assert armed.status_code == 201, armed.text
            assert wait_dead(worker) == -9
            stack_path = f"/timers/{armed.json()['id']}/stack"
            assert wait_until(lambda: client.get(stack_path).status_code == 200, 15)
            stack = client.get(stack_path).text
        yield Remote(service, path, token_file, armed.json()["id"], stack)
    finally:
        worker.kill()
        worker.wait()
        service.stop()


def test_a_service_down_is_exit_3_naming_the_url_or_socket_and_what_to_do(
    tmp_path: Path,
) -> None:
    port = free_port()  # nobody listens there
    url = f"http://127.0.0.1:{port}"
    other = f"http://127.0.0.1:{free_port()}"
    runs = cli_many(
        {
            "url": ["timers", "--url", url],
            "env": ["incidents"],
            "socket": ["nodes", "--uds", str(tmp_path / "none.sock")],
        },
        env={"TIMER_SERVICE_URL": other},
    )
    for name, said in (
        ("url", f"cannot reach the timer service at {url}"),
        ("env", f"cannot reach the timer service at {other}"),
        ("socket", f"cannot reach the timer service on the Unix socket {tmp_path}/none.sock"),
    ):
        done = runs[name]
        assert done.returncode == 3, (name, done.stderr)
        assert said in done.stderr
        assert "timer-service serve" in done.stderr and "Start it" in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.fixture(scope="module")
def runs(remote: Remote) -> dict[str, subprocess.CompletedProcess[str]]:
    url = ["--url", remote.service.url]
    stack = ["stack", str(remote.killed_id)]
    loose = remote.token_file.with_name("loose-token")
    loose.write_text(TOKEN + "\n")
    loose.chmod(0o644)
    return cli_many(
        {
            "no token": [*stack, *url],
            "wrong token": [*stack, *url],
            "loose file": [*stack, *url, "--token-file", str(loose)],
            "env token": [*stack, *url],
            "file token": [*stack, *url, "--token-file", str(remote.token_file)],
            # The socket, while --url names a port where nothing listens: the socket is used.
            "socket": [*stack, "--uds", str(remote.socket), "--url", "http://127.0.0.1:1"],
            "socket timers": ["timers", "--uds", str(remote.socket), "--json"],
        },
        envs={
            "wrong token": {"TIMER_SERVICE_TOKEN": "nope"},
            "env token": {"TIMER_SERVICE_TOKEN": TOKEN},
        },
    )


def test_a_caller_the_service_cannot_identify_is_refused_with_exit_4_and_why(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = runs["no token"]
    assert done.returncode == 4, done.stderr
    assert "403 Forbidden" in done.stderr and "cannot tell who you are" in done.stderr
    assert "send the admin token" in done.stderr
    assert done.stdout == ""
    # A wrong token is refused as wrong, before who is calling matters (WrongToken).
    wrong = runs["wrong token"]
    assert wrong.returncode == 4, wrong.stderr
    assert "401 Unauthorized: missing or wrong token" in wrong.stderr
    assert wrong.stdout == ""


def test_the_token_from_the_environment_or_a_file_lets_it_read(
    remote: Remote, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    for name in ("env token", "file token"):
        done = runs[name]
        assert done.returncode == 0, (name, done.stderr)
        assert done.stdout.rstrip("\n") == remote.stack.rstrip("\n")
        # Plain http to an address beyond loopback: the user is told the token is exposed.
        assert f"the admin token goes unencrypted to {remote.service.url}" in done.stderr
    assert "unencrypted" not in runs["socket"].stderr


def test_a_token_file_others_can_read_is_refused_before_any_request(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = runs["loose file"]
    assert done.returncode == 2, done.stderr
    assert "can be read by other users (mode 644); run: chmod 600" in done.stderr
    assert done.stderr.count("timer-service") == 1, done.stderr  # named once, not twice


def test_over_the_socket_the_service_knows_the_caller(
    remote: Remote, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    # The same request as "no token", which the service refused: here it knows root.
    done = runs["socket"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == remote.stack.rstrip("\n")
    listed = runs["socket timers"]
    assert listed.returncode == 0, listed.stderr
    with over_socket(remote.socket) as client:
        expected: Any = client.get("/timers").json()
    assert json.loads(listed.stdout) == expected
