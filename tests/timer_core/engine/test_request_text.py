"""The one rule for a request's scope id (request_text), and its escaped form for the
record: what it refuses, exactly, and that a refused value can always be stored."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from timer_core import ManualClock, Reaper
from timer_core.engine.admission import (
    RefusedError,
    check_expiration,
    check_scope_id,
    check_signal,
)
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.emitter import refused_event
from timer_core.engine.process import ProcessSignaller
from timer_core.engine.request_text import (
    MAX_SCOPE_LENGTH,
    recordable_text,
    scope_id_problem,
    shown,
)


def test_exactly_the_control_characters_and_surrogates_are_refused() -> None:
    """The documented rule (Unicode categories Cc and Cs), checked on every code point
    against what the fast search refuses."""
    for code in range(sys.maxunicode + 1):
        character = chr(code)
        refused = unicodedata.category(character) in ("Cc", "Cs")
        assert (scope_id_problem("a" + character) is not None) == refused, hex(code)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_SCOPE_LENGTH + 1), f"at most {MAX_SCOPE_LENGTH}"),
        (b"step", "must be a string, got bytes"),
        (None, "must be a string, got NoneType"),
        ("step\ud800", "U+D800 at position 4"),
        ("\x00", "U+0000 at position 0"),
        ("a\tb", "U+0009"),
        ("a\x85", "U+0085"),
    ],
)
def test_a_refusal_says_what_is_wrong(value: object, says: str) -> None:
    with pytest.raises(RefusedError, match=says.replace("+", r"\+")) as refused:
        check_scope_id(value)
    assert refused.value.field == "scope_id"


def test_printable_text_of_any_script_is_allowed() -> None:
    for scope in ("x" * MAX_SCOPE_LENGTH, "train step 1", "épreuve ✓ 训练 🚀", "a\u202eb\u2028"):
        assert check_scope_id(scope) == scope


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("\ud800", "\\ud800"),
        ("a\x00b\n", "a\\x00b\\x0a"),
        ("épreuve", "épreuve"),
        (12, "12"),
        ("x" * 5000, "x" * MAX_SCOPE_LENGTH),
    ],
)
def test_a_refused_value_is_recorded_escaped(value: object, kept: str) -> None:
    text = recordable_text(value)
    assert text == kept
    assert scope_id_problem(text) is None or text == ""
    text.encode("utf-8")  # never raises: the database and the page can take it


@pytest.mark.parametrize("expiration_time", [10**400, -(10**400), float("nan"), float("inf")])
def test_a_deadline_with_no_finite_float_is_refused(expiration_time: float) -> None:
    with pytest.raises(RefusedError, match="finite"):
        check_expiration(expiration_time, now=1_700_000_000.0)


def test_an_integer_with_no_repr_is_refused_not_raised() -> None:
    """The queue carries any Python int: one of 5,000 digits has no str() under Python's
    default limit, and must still be refused, logged and recorded, never raise."""
    huge = 10**5000
    assert shown(huge) == f"<an integer of {huge.bit_length()} bits>"
    assert ProcessSignaller().refusal(huge) == f"pid {shown(huge)} is out of range (max {2**22})"
    with pytest.raises(RefusedError, match="bits> is not a signal"):
        check_signal(huge)
    reaper = Reaper(clock=ManualClock(), watch_exits=False)
    assert reaper.apply(ArmRequest(huge, "s", 1.0, huge), Origin("queue")) is False
    event = refused_event(
        1, 0.0, ArmRequest(huge, "s\ud800", 1.0, huge), Origin("queue"), "a reason"
    )
    assert (event.timer.pid, event.timer.signal, event.timer.scope_id) == (-1, 0, "s\\ud800")
    json.dumps(event.detail.as_json()).encode("utf-8")
