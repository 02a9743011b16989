"""The real ``timer-service serve`` process says what it does, in one format: a line
per kill and per refusal, uvicorn's lines in the same format, and an access log only
when asked for. The tests of the default service share one (``shared_service``): each
looks for the lines of its own workers and scopes, and every line is in the format."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import httpx
import pytest

from app.ops.logs import LineFormatter, configure_logging
from app.settings import Settings
from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
)
FORGED = "2030-01-01 00:00:00,000 INFO timer_core.expiry: timer 999 killed: pid=1 scope='x'"


def lines(service: ServiceProcess) -> list[str]:
    return service.log().splitlines()


def assert_one_format(service: ServiceProcess) -> None:
    bad = [line for line in lines(service) if not LINE.match(line)]
    assert bad == [], f"lines not in the format: {bad}"


def logged(service: ServiceProcess, pattern: str) -> re.Match[str]:
    """The first log line matching ``pattern``, waiting for the service to write it."""
    compiled = re.compile(pattern)
    found: list[re.Match[str]] = []

    def check() -> bool:
        found[:] = [m for m in map(compiled.search, lines(service)) if m]
        return bool(found)

    assert wait_until(check), f"no line matches {pattern!r} in:\n{service.log()}"
    return found[0]


def arm(service: ServiceProcess, pid: int, scope: str, **extra: object) -> httpx.Response:
    body = {"pid": pid, "scope_id": scope, "expires_in": 0.2, **extra}
    return httpx.post(service.url + "/timers", json=body)


def test_a_kill_is_logged_with_pid_scope_signal_lateness_and_stack(
    shared_service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    service = shared_service
    victim = spawn_sleeper()
    sleepers.append(victim)
    response = arm(service, victim.pid, "train-step")
    assert response.status_code == 201
    assert_sigkilled(victim)
    match = logged(
        service,
        rf" INFO timer_core\.expiry: timer (\d+) killed: pid={victim.pid} scope='train-step' "
        r"signal=9 \(SIGKILL\) source=http late_ms=(\d+\.\d) "
        r"stack=(py-spy|proc)\S* \(\d+\.\d{3}s\)$",
    )
    assert int(match.group(1)) == response.json()["id"]
    assert float(match.group(2)) >= 0.0
    killed_lines = [line for line in lines(service) if f"killed: pid={victim.pid} " in line]
    assert len(killed_lines) == 1
    assert_one_format(service)


def test_a_refusal_is_logged_as_a_warning(shared_service: ServiceProcess) -> None:
    service = shared_service
    assert service.process is not None
    for signum in (9, 0):  # the service itself, even observe-only
        response = arm(service, service.process.pid, "suicide", signal=signum)
        assert response.status_code == 422

    def refused() -> list[str]:
        # The module's other tests share the service and log refusals of their own.
        return [
            line
            for line in lines(service)
            if "refused a timer request" in line and "scope='suicide'" in line
        ]

    assert wait_until(lambda: len(refused()) == 2), service.log()
    for line, shown in zip(refused(), ("9 (SIGKILL)", "0"), strict=True):
        assert " WARNING timer_core.reaper: refused a timer request from http: " in line
        assert f"pid={service.process.pid} scope='suicide' signal={shown} " in line
        assert "the timer server itself" in line
    assert_one_format(service)


def test_a_scope_with_a_newline_cannot_forge_a_log_line(
    shared_service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    service = shared_service
    victim = spawn_sleeper()
    sleepers.append(victim)
    # A newline is a control character: refused at the door (issue 20), before anything
    # quotes it. The Unicode line and paragraph separators are not control characters:
    # armed, and escaped in every line that quotes them.
    assert arm(service, victim.pid, f"step\n{FORGED}").status_code == 422
    hostile = f"step\u2028{FORGED}\u2029{FORGED}"
    assert arm(service, victim.pid, hostile).status_code == 201
    assert arm(service, 1, hostile).status_code == 422  # refused by the engine: logged
    assert_sigkilled(victim)
    # repr() quotes with " here, as the scope holds a ': either way, U+2028 is escaped.
    logged(service, rf"killed: pid={victim.pid} scope=\"step\\u20282030-01-01 00:00:00,000 INFO ")
    logged(service, r"refused a timer request from http: pid=1 scope=\"step\\u20282030")
    assert not any(line.startswith("2030-01-01") for line in lines(service))
    assert sum(FORGED in line for line in lines(service)) == 2  # both kept, inside their lines
    assert_one_format(service)


def test_uvicorn_lines_share_the_format_and_there_is_no_access_log_by_default(
    shared_service: ServiceProcess,
) -> None:
    service = shared_service
    for _ in range(3):
        assert httpx.get(service.url + "/healthz").status_code == 200
    logged(service, r" INFO uvicorn\.error: Application startup complete\.$")
    logged(service, r" INFO app\.service: timer-service started: ")
    assert not any("uvicorn.access" in line or "GET /healthz" in line for line in lines(service))
    assert_one_format(service)


@pytest.mark.parametrize(
    ("flags", "env"),
    [(("--access-log",), {}), ((), {"TIMER_SERVICE_ACCESS_LOG": "true"})],
    ids=["flag", "environment"],
)
def test_the_access_log_is_opt_in(
    tmp_path: Path, flags: tuple[str, ...], env: dict[str, str]
) -> None:
    service = ServiceProcess(tmp_path, *flags, env=env).start()
    try:
        assert httpx.get(service.url + "/timers", params={"limit": 3}).status_code == 200
        logged(
            service,
            r" INFO uvicorn\.access: 127\.0\.0\.1:\d+ - \"GET /timers\?limit=3 HTTP/1\.1\" 200$",
        )
        assert_one_format(service)
    finally:
        service.stop()


def test_the_access_log_shows_even_at_log_level_warning(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, "--access-log", "--log-level", "warning").start()
    try:
        assert httpx.get(service.url + "/healthz").status_code == 200
        logged(service, r" INFO uvicorn\.access: .*\"GET /healthz HTTP/1\.1\" 200$")
        assert not any("uvicorn.error" in line for line in lines(service))  # INFO, not shown
        assert_one_format(service)
    finally:
        service.stop()


# ---- the pieces, in process ------------------------------------------------------------


def test_the_formatter_keeps_a_record_on_one_line_and_indents_a_traceback() -> None:
    formatter = LineFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a\nb\r\u2028c", None, None)
    assert formatter.format(record).endswith(" INFO x: a\\nb\\r\\u2028c")
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        failed = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "it failed", None, sys.exc_info()
        )
    first, *rest = formatter.format(failed).splitlines()
    assert first.endswith(" ERROR x: it failed") and rest
    assert all(line.startswith("    ") for line in rest)


def test_configure_logging_writes_every_logger_in_one_format() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = StringIO()
    try:
        configure_logging("info", access_log=False, stream=stream)
        logging.getLogger("timer_core.expiry").info("a kill")
        logging.getLogger("uvicorn.error").info("uvicorn says")
        logging.getLogger("timer_core.expiry").debug("not shown")
        for handler in root.handlers:
            handler.close()  # drains the queue into the stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    written = stream.getvalue().splitlines()
    assert [line.split(" ", 2)[2] for line in written] == [
        "INFO timer_core.expiry: a kill",
        "INFO uvicorn.error: uvicorn says",
    ]
    assert all(LINE.match(line) for line in written)


def test_log_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().access_log is False
    assert Settings.from_env().log_level == "info"
    monkeypatch.setenv("TIMER_SERVICE_ACCESS_LOG", "true")
    monkeypatch.setenv("TIMER_SERVICE_LOG_LEVEL", "WARNING")
    assert Settings.from_env().access_log is True
    assert Settings.from_env().log_level == "warning"
    assert Settings.from_env(log_level="debug", access_log=False).log_level == "debug"
    monkeypatch.setenv("TIMER_SERVICE_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit, match="TIMER_SERVICE_LOG_LEVEL='loud' is not one of"):
        Settings.from_env()
