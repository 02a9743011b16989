"""Each kind's detail is stored and answered (GET /events, contract 4) as the JSON the
event log has always held: the same keys, and none for what an event does not know."""

from __future__ import annotations

import pytest

from timer_core.engine import CapturedStack, EventKind, TimerState
from timer_core.engine.event_details import (
    Armed,
    Ended,
    Escalated,
    EventDetail,
    Incident,
    JsonObject,
    Kill,
    NoKill,
    Refusal,
    Unkillable,
    state_after,
)
from timer_core.engine.states import END_KINDS, STATE_AFTER

STACK = CapturedStack("py-spy", "Thread 7 ...\n", 0.123456, notes=("faulthandler: off",))
SUMMARY = {"method": "py-spy", "seconds": 0.1235, "bytes": 13, "notes": ["faulthandler: off"]}


@pytest.mark.parametrize(
    ("detail", "stored"),
    [
        (Armed(), {}),
        (Ended(released_by="http"), {"released_by": "http"}),
        (
            Ended("worker exited before its deadline"),
            {"reason": "worker exited before its deadline"},
        ),
        (
            Kill(0.002, children=(201,), stack=STACK),
            {"latency": 0.002, "children": [201], "stack": SUMMARY},
        ),
        (
            Kill(0.5, signalled_by=7, stack_note="no capture slot"),
            {
                "latency": 0.5,
                "reason": "worker already signalled for timer 7",
                "stack_note": "no capture slot",
            },
        ),
        (Kill(0.1, error="RuntimeError: x"), {"latency": 0.1, "error": "RuntimeError: x"}),
        (
            NoKill("observe only", 0.25, stack=STACK),
            {"reason": "observe only", "latency": 0.25, "stack": SUMMARY},
        ),
        (
            NoKill("permission denied (EPERM)", children_error="EMFILE"),
            {"reason": "permission denied (EPERM)", "children_error": "EMFILE"},
        ),
        (
            Escalated("still alive 10s after signal 15", ()),
            {"reason": "still alive 10s after signal 15", "sigkilled": []},
        ),
        (
            Refusal("pid 77 is not running", "77"),
            {"reason": "pid 77 is not running", "requested_pid": "77"},
        ),
        (Incident(None, ()), {"job_id": None, "processes": 0, "stacks": 0}),
        # state, wchan and seconds always (contract 10), null when unknown.
        (
            Unkillable(10.00049, "D", "disk sleep", "request_wait_answer"),
            {
                "state": "D",
                "wchan": "request_wait_answer",
                "seconds": 10.0,
                "state_name": "disk sleep",
            },
        ),
        (
            Unkillable(10.0, note="/proc/7 did not answer within 1s"),
            {
                "state": None,
                "wchan": None,
                "seconds": 10.0,
                "note": "/proc/7 did not answer within 1s",
            },
        ),
        (
            Unkillable(31.5, exited=True),
            {"state": None, "wchan": None, "seconds": 31.5, "exited": True},
        ),
    ],
)
def test_each_detail_is_stored_with_the_keys_the_log_has_always_had(
    detail: EventDetail, stored: JsonObject
) -> None:
    assert detail.as_json() == stored


def test_only_a_kill_by_the_timers_own_signal_is_a_kill_sent() -> None:
    assert Kill(0.0).sent_signal and Kill(0.0, error="after an error").sent_signal
    assert not Kill(0.0, signalled_by=3).sent_signal


def test_the_state_each_kind_leaves_a_timer_in() -> None:
    assert state_after(EventKind.ACQUIRED, Armed()) == TimerState.ACTIVE
    assert state_after(EventKind.KILLED, Kill(0.0)) == TimerState.KILLED
    assert state_after(EventKind.KILL_FAILED, NoKill("EPERM")) == TimerState.EXPIRED
    # A worker gone: expired when reaped or found gone past its deadline, released before.
    assert state_after(EventKind.WORKER_GONE, NoKill("gone")) == TimerState.EXPIRED
    assert state_after(EventKind.WORKER_GONE, Ended("gone")) == TimerState.EXPIRED
    assert state_after(EventKind.WORKER_GONE, Ended("gone", before_deadline=True)) == (
        TimerState.RELEASED
    )
    assert state_after(EventKind.REFUSED, Refusal("no", "1")) is None
    # Only a worker sent SIGKILL outlives it: its timer was killed, and stays so.
    assert state_after(EventKind.UNKILLABLE, Unkillable(10.0, "D")) == TimerState.KILLED
    assert EventKind.UNKILLABLE not in END_KINDS
    assert STATE_AFTER.keys() >= END_KINDS and EventKind.ESCALATED not in END_KINDS
