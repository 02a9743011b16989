"""Text from the service made safe to print on the operator's terminal.

A scope id, a job id, a node name, an event's detail, an incident's summary and a
stack's file names are chosen by whoever runs the workers: another user, printing to
root's terminal. Written out as they are, an ESC or C1 control starts an escape
sequence (OSC 52 sets the clipboard, OSC 8 makes a link, CSI moves the cursor and
rewrites what was printed), ``\\r`` and ``\\b`` overwrite a line, U+202E turns it
around, and rich would read ``[link=...]`` or ``[/bold]`` as its markup (the last one
raising, so one user could stop root's listing). So every character Python does not
call printable is written as a backslash escape (``\\x1b``, ``\\u202e``), and text
reaches rich as ``Text``, never as markup. ``--json`` escapes the same characters the
JSON way (``\\u001b``): the same JSON values, nothing that acts on a terminal."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

__all__ = ["plain", "printable", "safe_json"]


def printable(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable (categories C and Z but
    the space: controls, format characters such as bidi overrides, surrogates, line
    separators) as a backslash escape, except those in ``keep`` (``"\\n\\t"`` for a
    stack)."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(char if char.isprintable() or char in keep else _escape(char) for char in text)


def plain(text: str, style: str = "") -> Text:
    """``text`` for rich: printable, and never read as markup."""
    return Text(printable(text), style=style)


def safe_json(body: Any, indent: int | None = None) -> str:
    """``body`` as JSON (non-ASCII text kept readable) with no character that a
    terminal would act on: those are ``\\uXXXX`` escapes, the same JSON value."""
    compact = (",", ":") if indent is None else None
    text = json.dumps(body, indent=indent, separators=compact, ensure_ascii=False)
    # json.dumps escapes U+0000-U+001F; DEL, C1, bidi controls and the like it leaves.
    if all(line.isprintable() for line in text.split("\n")):
        return text
    return "".join(
        char if char.isprintable() or char == "\n" else _json_escape(char) for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    # Outside the BMP JSON has only a surrogate pair.
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
