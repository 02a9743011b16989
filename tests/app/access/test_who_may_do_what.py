"""Contract 7 against the real service running as root: a second, unprivileged user
may act on its own processes only, over loopback TCP and over the Unix socket."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess, ask_as, refusals, refused_start
from tests.second_user import SERVICE_AS_ROOT, SecondUser
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

pytestmark = SERVICE_AS_ROOT


@pytest.fixture(scope="module")
def other() -> SecondUser:
    return SecondUser.named("ts-caller")


@pytest.fixture
def service(tmp_path: Path, shared_tmp: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(
        tmp_path, "--uds", str(shared_tmp / "ts.sock"), "--max-timers-per-user", "2"
    ).start()
    yield running
    running.stop()


@pytest.fixture
def own_worker(
    other: SecondUser, sleepers: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """A process of the second user's own."""
    sleepers.append(other.sleeper())
    return sleepers[-1]


@pytest.fixture
def roots_worker(sleeper: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    return sleeper


CHANNELS = ["tcp", "unix"]


def call(
    service: ServiceProcess,
    user: SecondUser,
    channel: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """One request made by ``user`` over ``channel``; (status, parsed body)."""
    target = service.url.replace("http://", "tcp://") if channel == "tcp" else ""
    if channel == "unix":
        target = "unix://" + service.extra[service.extra.index("--uds") + 1]
    return ask_as(user, target, method, path, body)


def arm_as_root(service: ServiceProcess, pid: int, scope: str, **extra: Any) -> dict[str, Any]:
    body = {"pid": pid, "scope_id": scope, "expires_in": 60, **extra}
    response = httpx.post(service.url + "/timers", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_user_arms_heartbeats_and_releases_timers_for_its_own_process(
    service: ServiceProcess,
    other: SecondUser,
    own_worker: subprocess.Popen[bytes],
    channel: str,
) -> None:
    body = {"pid": own_worker.pid, "scope_id": "mine", "expires_in": 60}
    status, created = call(service, other, channel, "POST", "/timers", body)
    assert status == 201, created
    assert created["uid"] == other.uid
    assert call(service, other, channel, "POST", "/timers", body)[0] == 200
    release = {"pid": own_worker.pid, "scope_id": "mine"}
    status, released = call(service, other, channel, "POST", "/timers/release", release)
    assert (status, released["state"]) == (200, "released")


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_user_cannot_arm_a_timer_on_roots_process(
    service: ServiceProcess,
    other: SecondUser,
    roots_worker: subprocess.Popen[bytes],
    channel: str,
) -> None:
    body = {"pid": roots_worker.pid, "scope_id": "attack", "expires_in": 0.2, "signal": 9}
    status, answer = call(service, other, channel, "POST", "/timers", body)
    assert status == 403, answer
    assert "belongs to uid 0" in answer["detail"]
    assert f"uid {other.uid}" in answer["detail"]
    timers = httpx.get(service.url + "/timers", params={"pid": roots_worker.pid}).json()
    assert timers["items"] == []
    assert any(f"uid {other.uid}" in reason for reason in refusals(service))
    assert roots_worker.poll() is None


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_user_cannot_defuse_roots_timer(
    service: ServiceProcess,
    other: SecondUser,
    roots_worker: subprocess.Popen[bytes],
    channel: str,
) -> None:
    armed = arm_as_root(service, roots_worker.pid, "root-job")
    timer_id = armed["id"]
    heartbeat = {
        "pid": roots_worker.pid,
        "scope_id": "root-job",
        "expires_in": 30 * 86400,
        "signal": 0,
    }
    release = {"pid": roots_worker.pid, "scope_id": "root-job"}
    assert call(service, other, channel, "POST", "/timers", heartbeat)[0] == 403
    assert call(service, other, channel, "POST", "/timers/release", release)[0] == 403
    assert call(service, other, channel, "DELETE", f"/timers/{timer_id}")[0] == 403
    now = httpx.get(f"{service.url}/timers/{timer_id}").json()
    assert (now["state"], now["signal"]) == ("active", 9)
    assert now["expiration_time"] == pytest.approx(armed["expiration_time"])
    assert sum(f"uid {other.uid}" in reason for reason in refusals(service)) >= 3


@pytest.mark.parametrize("channel", CHANNELS)
def test_only_the_owner_reads_a_stack(
    service: ServiceProcess,
    other: SecondUser,
    roots_worker: subprocess.Popen[bytes],
    own_worker: subprocess.Popen[bytes],
    channel: str,
) -> None:
    roots = arm_as_root(service, roots_worker.pid, "observed", signal=0, expires_in=0.2)["id"]
    body = {"pid": own_worker.pid, "scope_id": "observed", "expires_in": 0.2, "signal": 0}
    status, mine = call(service, other, channel, "POST", "/timers", body)
    assert status == 201, mine

    def both_captured() -> bool:
        return all(
            httpx.get(f"{service.url}/timers/{tid}/stack").status_code == 200
            for tid in (roots, mine["id"])
        )

    assert wait_until(both_captured, timeout=20)
    status, answer = call(service, other, channel, "GET", f"/timers/{roots}/stack")
    assert status == 403, answer
    assert "belongs to uid 0" in answer["detail"]
    status, own_stack = call(service, other, channel, "GET", f"/timers/{mine['id']}/stack")
    assert status == 200 and str(own_worker.pid) in own_stack


def test_one_user_may_hold_only_so_many_timers_and_root_is_not_capped(
    service: ServiceProcess,
    other: SecondUser,
    own_worker: subprocess.Popen[bytes],
    roots_worker: subprocess.Popen[bytes],
) -> None:
    for scope in ("a", "b"):
        body = {"pid": own_worker.pid, "scope_id": scope, "expires_in": 60}
        assert call(service, other, "unix", "POST", "/timers", body)[0] == 201
    third = {"pid": own_worker.pid, "scope_id": "c", "expires_in": 60}
    status, answer = call(service, other, "unix", "POST", "/timers", third)
    assert status == 429, answer
    assert "--max-timers-per-user" in answer["detail"]
    # A heartbeat of a timer it holds is not a new timer.
    again = {"pid": own_worker.pid, "scope_id": "a", "expires_in": 60}
    assert call(service, other, "unix", "POST", "/timers", again)[0] == 200
    for scope in ("r1", "r2", "r3"):
        arm_as_root(service, roots_worker.pid, scope)


def test_the_services_own_threads_are_refused(service: ServiceProcess) -> None:
    assert service.process is not None
    threads = [int(t) for t in os.listdir(f"/proc/{service.process.pid}/task")]
    others = [tid for tid in threads if tid != service.process.pid]
    assert others, "the service runs several threads"
    body = {"pid": others[0], "scope_id": "self", "expires_in": 0.2}
    response = httpx.post(service.url + "/timers", json=body)
    assert response.status_code == 422
    assert "thread of the timer server" in response.text
    assert httpx.get(service.url + "/healthz").status_code == 200


def test_requests_for_a_foreign_host_or_too_large_are_refused(service: ServiceProcess) -> None:
    rebound = httpx.get(service.url + "/timers", headers={"Host": "rebind.attacker.example"})
    assert rebound.status_code == 421
    assert "--allowed-hosts" in rebound.json()["detail"]
    big = httpx.post(
        service.url + "/timers",
        content=b"{" + b" " * (100 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and "bytes" in big.json()["detail"]
    huge_header = httpx.get(service.url + "/healthz", headers={"X-Filler": "x" * 40_000})
    assert huge_header.status_code == 400
    assert httpx.get(service.url + "/healthz").status_code == 200


def test_a_worker_on_the_http_client_over_the_unix_socket_is_killed_when_it_hangs(
    service: ServiceProcess, shared_tmp: Path
) -> None:
    code = (
        "import time, timer_core as timer\n"
        f"timer.configure(timer.HttpTimerClient('unix://{shared_tmp / 'ts.sock'}'))\n"
        "with timer.expires(after=0.5, scope='over-uds'):\n"
        "    time.sleep(600)\n"
    )
    worker = spawn_sleeper(code)
    assert_sigkilled(worker)
    found = httpx.get(service.url + "/timers", params={"pid": worker.pid}).json()["items"]
    assert [(t["scope_id"], t["state"], t["uid"]) for t in found] == [("over-uds", "killed", 0)]


def test_a_token_file_readable_by_others_is_refused_and_a_private_one_works(
    tmp_path: Path, roots_worker: subprocess.Popen[bytes]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o644)
    refused = refused_start(tmp_path, "--token-file", str(token_file))
    assert refused.returncode != 0
    assert "chmod 600" in refused.stderr
    token_file.chmod(0o600)
    service = ServiceProcess(tmp_path, "--token-file", str(token_file)).start()
    try:
        body = {"pid": roots_worker.pid, "scope_id": "t", "expires_in": 60}
        assert httpx.post(service.url + "/timers", json=body).status_code == 401
        headers = {"Authorization": "Bearer s3cret"}
        assert httpx.post(service.url + "/timers", json=body, headers=headers).status_code == 201
        assert "s3cret" not in Path(f"/proc/{service.process.pid}/cmdline").read_text()  # type: ignore[union-attr]
    finally:
        service.stop()


def test_a_token_on_the_command_line_is_warned_about(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, "--token", "visible").start()
    try:
        assert "--token is visible to every user" in service.log()
    finally:
        service.stop()


def test_a_worker_claiming_another_users_job_id_gets_none_of_its_ranks(
    service: ServiceProcess,
    other: SecondUser,
    own_worker: subprocess.Popen[bytes],
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """A job id is any string: the second user labels its own worker with root's job id.
    Its expiry must dump none of root's ranks, and root's own hang must still open an
    incident holding both of root's ranks."""
    victims = [spawn_sleeper(), spawn_sleeper()]
    sleepers.extend(victims)
    labels = {"job_id": "victim-job", "world_size": 2}
    for rank, worker in enumerate(victims):
        arm_as_root(service, worker.pid, "step", rank=rank, **labels)
    decoy = {"pid": own_worker.pid, "scope_id": "decoy", "expires_in": 0.3, "rank": 0}
    status, body = call(service, other, "tcp", "POST", "/timers", {**decoy, **labels})
    assert status == 201, body
    assert_sigkilled(own_worker)

    def incidents() -> list[dict[str, Any]]:
        found = httpx.get(service.url + "/incidents", params={"job": "victim-job"})
        return list(reversed(found.json()["items"]))  # oldest first

    assert wait_until(lambda: len(incidents()) == 1)
    assert [rank["pid"] for rank in incidents()[0]["ranks"]] == [own_worker.pid]
    assert all(worker.poll() is None for worker in victims)  # not signalled, not dumped

    hang = {"pid": victims[1].pid, "scope_id": "step", "expires_in": 0.3, "rank": 1}
    assert httpx.post(service.url + "/timers", json={**hang, **labels}).status_code == 200
    assert_sigkilled(victims[1])
    assert wait_until(lambda: len(incidents()) == 2)
    assert sorted(rank["pid"] for rank in incidents()[1]["ranks"]) == sorted(
        worker.pid for worker in victims
    )


def test_a_worker_claiming_roots_job_id_shows_as_a_job_of_its_own(
    service: ServiceProcess,
    other: SecondUser,
    own_worker: subprocess.Popen[bytes],
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """A job is its id and its owner (issue 20): the second user's worker labelled with
    root's job id, and newer than root's ranks, is listed as a job of its own, and
    never takes the place of root's rank 0 on root's job page."""
    victims = [spawn_sleeper(), spawn_sleeper()]
    sleepers.extend(victims)
    labels = {"job_id": "victim-job", "world_size": 2}
    roots = [arm_as_root(service, worker.pid, "step", rank=rank, **labels) for rank, worker in
             enumerate(victims)]  # fmt: skip
    claim = {"pid": own_worker.pid, "scope_id": "claim", "expires_in": 60, "rank": 0, **labels}
    status, claimed = call(service, other, "tcp", "POST", "/timers", claim)
    assert status == 201, claimed

    listed = httpx.get(service.url + "/jobs").json()["items"]
    owners = {job["uid"]: job for job in listed if job["job_id"] == "victim-job"}
    assert set(owners) == {0, other.uid}
    assert (owners[0]["ranks_seen"], owners[other.uid]["ranks_seen"]) == (2, 1)

    def rank_pids(job: dict[str, Any]) -> list[int]:
        return [rank["pid"] for rank in job["ranks"]]

    # Root asks without ?uid=: its own job; the second user likewise gets its own.
    roots_job = httpx.get(service.url + "/jobs/victim-job").json()
    assert (roots_job["uid"], rank_pids(roots_job)) == (0, [worker.pid for worker in victims])
    status, theirs = call(service, other, "tcp", "GET", "/jobs/victim-job")
    assert (status, theirs["uid"], rank_pids(theirs)) == (200, other.uid, [own_worker.pid])
    chosen = httpx.get(service.url + "/jobs/victim-job", params={"uid": other.uid}).json()
    assert rank_pids(chosen) == [own_worker.pid]
    # Root's page: its two ranks' timers, none of the claimant's.
    page = httpx.get(service.url + "/ui/jobs/victim-job").text
    for timer in roots:
        assert f'data-timer-id="{timer["id"]}"' in page
    assert f'data-timer-id="{claimed["id"]}"' not in page
