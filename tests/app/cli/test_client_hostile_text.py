"""What another user's worker names reaches root's terminal harmless: a scope id and a
job id of rich markup (a link, a style, a closing tag that made rich raise) and a
bidi override, and a stuck worker whose function name and file path carry escape
sequences (OSC 52 to set the clipboard, OSC 8 for a link, a screen clear, ``\\r``,
``\\b``, a C1 CSI), so its stack does too.

Every command runs on a real terminal (a pty) and into a pipe against the real
service: the only escape sequences written are the client's own colours, the
hostile text is there to read, escaped; ``--json`` (and ``--follow --json``) is the
REST answer as JSON with no such character in its bytes. And ``safe_text`` over
every code point."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.cli.client.safe_text import printable, safe_json
from tests.app.cli.client_cli import cli_in_terminal, cli_many, cli_popen
from tests.app.job_over_http import rest, whole_incident
from tests.app.service_process import ServiceProcess
from timer_core.diagnosis.stack_capture import StackCapturer

SCOPE = "[link=https://evil.example/]step[/link] [reverse]x[/bold] \u202eevil"
JOB = "[bold red]job[/]"
ATTACK = "\x1b]52;c;ZXZpbA==\x07\x1b]8;;https://evil.example/\x1b\\\x1b[2J\r\x08\x9b31m"
# A function renamed after definition: py-spy reads the name from the worker's memory.
STUCK = f"""
import time


def load_batch():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)


load_batch.__code__ = load_batch.__code__.replace(co_name={ATTACK!r}, co_qualname={ATTACK!r})
load_batch()
"""
# What the terminal must never get (the pty turns "\n" into "\r\n": that one is fine).
FORBIDDEN = ("\x07", "\x08", "\x9b", "\u202e", "\x1b]", "\x1b[2J")
OWN_COLOURS = re.compile(r"\x1b\[[0-9;]*m")

can_kill_and_capture = pytest.mark.skipif(
    os.geteuid() != 0 or StackCapturer().py_spy is None,
    reason="needs root and py-spy: the stuck worker's stack is taken with ptrace",
)


class Hostile:
    def __init__(self, service: ServiceProcess, timer: dict[str, Any]) -> None:
        self.service = service
        self.url = service.url
        self.timer = timer


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    workdir = tmp_path_factory.mktemp("hostile")
    # A directory a user may name as they like: its name is in the stack's file paths.
    home = workdir / ("x" + ATTACK.replace("/", ""))
    home.mkdir()
    (home / "stuck.py").write_text(STUCK)
    service = ServiceProcess(workdir).start()
    worker = subprocess.Popen([sys.executable, str(home / "stuck.py")], stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
        body = {
            "pid": worker.pid,
            "scope_id": SCOPE,
            "expires_in": 0.5,
            "job_id": JOB,
            "rank": 0,
            "world_size": 1,
        }
        armed = httpx.post(service.url + "/timers", json=body)
        assert armed.status_code == 201, armed.text
        whole_incident(service, JOB, 1, killed=[0])
        yield Hostile(service, armed.json())
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
        service.stop()


def commands(hostile: Hostile) -> dict[str, list[str]]:
    timer = str(hostile.timer["id"])
    incident = str(rest(hostile.service, "/incidents", job=JOB)["items"][0]["id"])
    url = ["--url", hostile.url]
    return {
        "timers": ["timers", *url],
        "events": ["events", *url],
        "jobs": ["jobs", *url],
        "job": ["job", JOB, *url],
        "timer": ["timer", timer, *url],
        "incidents": ["incidents", *url],
        "incident": ["incident", incident, *url],
        "stack": ["stack", timer, *url],
    }


def assert_harmless(output: str, name: str) -> None:
    for forbidden in FORBIDDEN:
        assert forbidden not in output, (name, forbidden, output)
    assert "\x1b" not in OWN_COLOURS.sub("", output), (name, output)
    assert "\r" not in output.replace("\r\n", "\n"), (name, output)


@can_kill_and_capture
def test_every_command_on_a_terminal_writes_only_its_own_colours(hostile: Hostile) -> None:
    for name, argv in commands(hostile).items():
        status, shown = cli_in_terminal(*argv, columns=400)
        assert status == 0, (name, shown)
        assert_harmless(shown, name)
        if name != "stack":
            assert "\x1b[" in shown  # coloured: a terminal, and the check above had work
    status, shown = cli_in_terminal(*commands(hostile)["timers"], columns=400)
    # The hostile text is shown, as text: markup as typed, the override as its escape.
    assert "[link=https://evil.example/]step[/link] [reverse]x[/bold] \\u202eevil" in shown
    assert f"{JOB} " in OWN_COLOURS.sub("", shown)


@can_kill_and_capture
def test_every_command_into_a_pipe_and_its_json(hostile: Hostile) -> None:
    runs = commands(hostile)
    every = dict(runs)
    every |= {f"{name} --json": [*argv, "--json"] for name, argv in runs.items() if name != "stack"}
    done = cli_many(every)
    for name, run in done.items():
        assert run.returncode == 0, (name, run.stderr)
        assert_harmless(run.stdout, name)
        assert_harmless(run.stderr, name)
    stack = httpx.get(f"{hostile.url}/timers/{hostile.timer['id']}/stack").text
    assert ATTACK in stack  # the service keeps what py-spy read
    # The client prints it line for line, each hostile character as its escape.
    assert done["stack"].stdout.rstrip("\n") == printable(stack, keep="\n\t").rstrip("\n")
    assert "\\x1b]52;c;ZXZpbA==\\x07" in done["stack"].stdout
    incident = rest(hostile.service, "/incidents", job=JOB)["items"][0]
    # (Its parser reads no frame from that stack: the summary says so, and the
    # incident's own text is checked harmless above.)
    assert printable(incident["summary"]) in done["incident"].stdout
    assert json.loads(done["timers --json"].stdout) == rest(hostile.service, "/timers")
    assert json.loads(done["incident --json"].stdout) == rest(
        hostile.service, f"/incidents/{incident['id']}"
    )
    assert json.loads(done["job --json"].stdout) == rest(hostile.service, f"/jobs/{JOB}")


@can_kill_and_capture
def test_follow_writes_the_events_harmless_and_its_json_lines_are_the_rest_events(
    hostile: Hostile,
) -> None:
    expected = rest(hostile.service, "/events", limit=50)["items"][::-1]
    assert any(event["scope_id"] == SCOPE for event in expected)
    for as_json in (True, False):
        flags = ["--json"] if as_json else []
        follower = cli_popen("events", "--follow", "--limit", "50", *flags, "--url", hostile.url)
        try:
            lines = _lines(follower, len(expected))
            follower.send_signal(signal.SIGINT)
            assert follower.wait(60) == 0
        finally:
            follower.kill()
            follower.communicate()
        for line in lines:
            assert_harmless(line, "events --follow")
        if as_json:
            assert [json.loads(line) for line in lines] == expected
        else:
            assert any(printable(SCOPE) in line for line in lines)


def _lines(process: subprocess.Popen[str], count: int) -> list[str]:
    """The first ``count`` lines the process writes, within 60 s (read on a thread:
    a buffered pipe does not say when a line waits in its buffer)."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    shown: list[str] = []
    for _ in range(count):
        try:
            shown.append(lines.get(timeout=60).rstrip("\n"))
        except queue.Empty:
            raise AssertionError(f"no line within 60 s after {shown}") from None
    return shown


def test_printable_escapes_every_character_a_terminal_acts_on() -> None:
    every = "".join(chr(code) for code in range(0x110000))
    shown = printable(every, keep="\n\t")
    assert all(line.isprintable() for line in shown.replace("\t", "").split("\n"))
    assert shown.count("\n") == 1 and shown.count("\t") == 1
    assert printable("a\x1b[2J\u202eb\U000e0001") == "a\\x1b[2J\\u202eb\\U000e0001"
    assert printable("plain text, ünïcode 漢字") == "plain text, ünïcode 漢字"


def test_safe_json_is_the_same_json_with_nothing_a_terminal_acts_on() -> None:
    # Surrogates one at a time: a high one then a low one is, in JSON, their pair.
    every = "".join(chr(code) for code in range(0x110000) if not 0xD800 <= code < 0xE000)
    lone = "a\ud800b\udfffc"
    body = {"all": every, "nested": [lone, {"k\u202e": 1.5}], "n": 2**70}
    for indent in (None, 2):
        text = safe_json(body, indent=indent)
        assert json.loads(text) == body
        assert all(line.isprintable() for line in text.split("\n"))
    assert safe_json({"a": "漢字"}) == '{"a":"漢字"}'  # readable, not \\u-escaped
