"""The one rule for the text a request names its timer by (its ``scope_id``), and the
escaped form in which a refused value is still recorded and shown.

A scope id is kept, stored (SQLite, PostgreSQL), rendered (the dashboard's HTML and
JSON) and logged. Whatever a source lets in must survive all of these, so every
source (HTTP, the FIFOs, the queue, torch's servers) asks this module, through the
engine, and HTTP's schema asks the same function before the engine sees the request:

- a ``str`` of 1 to ``MAX_SCOPE_LENGTH`` characters;
- no character of Unicode category Cc (control characters: U+0000-U+001F and
  U+007F-U+009F; NUL cannot be stored on PostgreSQL, a newline forges log lines);
- no character of category Cs (surrogates, U+D800-U+DFFF): JSON's ``"\\ud800"`` decodes
  to a lone one, which no UTF-8 encoder (the database's, the page's) accepts.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_SCOPE_LENGTH", "recordable_text", "scope_id_problem", "shown"]

MAX_SCOPE_LENGTH = 1024

# Exactly the characters of categories Cc and Cs (a test checks every code point), as
# one C-level search: a request pays microseconds, not a Python loop per character.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def scope_id_problem(value: Any, field: str = "scope_id") -> str | None:
    """Why ``value`` may not be a scope id (a sentence that says what to send
    instead), or None if it may."""
    if not isinstance(value, str):
        return f"{field} must be a string, got {type(value).__name__}"
    if not value:
        return f"{field} must not be empty"
    if len(value) > MAX_SCOPE_LENGTH:
        return f"{field} is {len(value)} characters long; at most {MAX_SCOPE_LENGTH} are allowed"
    unsafe = _UNSAFE.search(value)
    if unsafe is not None:
        return (
            f"{field} holds U+{ord(unsafe.group()):04X} at position {unsafe.start()}: control "
            "characters and lone surrogates (Unicode categories Cc and Cs) are refused; "
            "send printable text"
        )
    return None


def recordable_text(value: Any, limit: int = MAX_SCOPE_LENGTH) -> str:
    """``value`` as text that can always be stored, encoded and shown: what the rule
    above refuses is written as a backslash escape (``\\x00``, ``\\ud800``), so a refused
    value is still on record, recognisably, and never raises where it is written."""
    text = value if isinstance(value, str) else str(value)
    text = text[:limit]
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


# Integers up to this many bits are shown in digits (at most 61 of them, and a sign).
_SHOWN_BITS = 200


def shown(value: Any, limit: int = 64) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters, never raising: an
    integer of 5,000 digits (the queue can carry one) has no repr under Python's
    default limit of 4,300 digits, and must not turn a refusal into a crash."""
    if isinstance(value, int) and value.bit_length() > _SHOWN_BITS:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
