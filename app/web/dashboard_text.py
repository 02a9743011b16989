"""The words and numbers the dashboard pages show, rendered the same way by the
server (Jinja filters) and, where the page updates live, by the scripts (common.js
mirrors ``middle_ellipsis``, ``duration`` and ``utc_text``)."""

from __future__ import annotations

import signal as signal_module
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from timer_core import EventKind

__all__ = [
    "NOTHING",
    "SCOPE_CHARS",
    "describe_event",
    "duration",
    "middle_ellipsis",
    "signal_name",
    "stack_note",
    "unkillable_words",
    "utc_iso",
    "utc_text",
]

# Scopes longer than this are shortened in the middle (common.js: TS.SCOPE_CHARS).
SCOPE_CHARS = 48
# What an empty cell shows, as in common.js.
NOTHING = "\N{EN DASH}"


def middle_ellipsis(text: str, limit: int = SCOPE_CHARS) -> str:
    """``text`` cut to ``limit`` characters by dropping its middle: torch's scopes are
    file paths, whose tail says the most. Mirrors ``TS.middle`` in common.js."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    head = keep // 3
    return text[:head] + "…" + text[len(text) - (keep - head) :]


def duration(seconds: float) -> str:
    """Mirrors ``TS.duration`` in common.js."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def signal_name(signal: int) -> str:
    if signal <= 0:
        return "observe only"
    try:
        return signal_module.Signals(signal).name
    except ValueError:
        return f"signal {signal}"


def utc_text(unix: float) -> str:
    """The one way every page writes a time: ``2025-05-01 04:21:29 UTC``, 24 hours, in
    UTC. The server does not know the reader's time zone, and a fleet's nodes may each
    be in another; one zone everywhere lets a time on the page be compared with a log
    line or another page as it stands. Mirrors ``TS.formatTime`` in common.js (which
    also truncates to the second)."""
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_iso(unix: float) -> str:
    """The same instant as ISO 8601 for ``<time datetime>``: ``2025-05-01T04:21:29Z``."""
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(seconds: Any) -> str:
    return f"{1000 * float(seconds):.1f} ms"


def describe_event(kind: str, detail: dict[str, Any], signal: int) -> str:
    """An event's detail in words, e.g. ``signal SIGKILL sent 1.3 ms after the
    deadline, stack by py-spy in 43 ms``. Unknown keys read ``key: value``."""
    if kind == EventKind.UNKILLABLE:
        return unkillable_words(detail)
    detail = dict(detail)
    parts: list[str] = []
    reason = detail.pop("reason", None)
    latency = detail.pop("latency", None)
    if reason is not None:
        parts.append(str(reason))
    if isinstance(latency, int | float):
        if kind == EventKind.KILLED and reason is None:
            parts.append(f"signal {signal_name(signal)} sent {_ms(latency)} after the deadline")
        else:
            parts.append(f"{_ms(latency)} after the deadline")
    elif latency is not None:
        detail["latency"] = latency
    if children := detail.pop("children", None):
        parts.append("also sent to its children " + _words(children))
    if sigkilled := detail.pop("sigkilled", None):
        parts.append("SIGKILL sent to " + _words(sigkilled))
    if released_by := detail.pop("released_by", None):
        parts.append(f"released over {released_by}")
    stack = detail.pop("stack", None)
    if isinstance(stack, dict):
        text = f"stack by {stack.get('method', '?')}"
        if isinstance(stack.get("seconds"), int | float):
            text += f" in {1000 * stack['seconds']:.0f} ms"
        # Why better methods were passed over is long: the stack's own note says it.
        parts.append(text)
    elif stack is not None:
        detail["stack"] = stack
    parts.extend(f"{key}: {_words(value)}" for key, value in detail.items())
    return ", ".join(parts)


def unkillable_words(detail: dict[str, Any]) -> str:
    """An ``unkillable`` event in words: ``still alive 10.0 s after its SIGKILL: D (disk
    sleep) in request_wait_answer``, or ``exited 31.5 s after its SIGKILL``. The state
    and wait channel are the kernel's words; shown as text (Jinja and the scripts
    escape them)."""
    seconds = detail.get("seconds")
    after = f"{float(seconds):.1f} s" if isinstance(seconds, int | float) else "some time"
    if detail.get("exited"):
        return f"exited {after} after its SIGKILL"
    state = detail.get("state") or "?"
    if detail.get("state_name"):
        state += f" ({_words(detail['state_name'])})"
    text = f"still alive {after} after its SIGKILL: {_words(state)}"
    if detail.get("wchan"):
        text += f" in {_words(detail['wchan'])}"
    if detail.get("note"):
        text += f" ({_words(detail['note'])})"
    return text


def _words(value: Any) -> str:
    """Any JSON value as plain words: lists joined, mappings as ``key=value``, no braces."""
    if isinstance(value, list | tuple):
        return ", ".join(_words(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={_words(item)}" for key, item in value.items())
    if value is None:
        return "none"
    return str(value)


def stack_note(
    method: str, seconds: float, truncated: bool, notes: Sequence[str], *, observe_only: bool
) -> str:
    when = "at expiry; no signal was sent" if observe_only else "before the signal"
    note = f"Captured with {method} in {1000 * seconds:.0f} ms, {when}."
    if truncated:
        note += " Cut to the size limit."
    if notes:
        note += " Passed over: " + "; ".join(notes) + "."
    return note
