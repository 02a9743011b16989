"""Text that cannot be encoded as UTF-8, escaped so that one such value never costs more
than itself: not a page, the dashboard's state or a batch of the recorder.

The engine refuses such text at the door (``timer_core.engine.request_text``); this is
the second line, for a value that got past it anyway (a bug, a new source). A Python
``str`` may hold a lone surrogate (JSON's ``"\\ud800"`` decodes to one), which every
UTF-8 encoder refuses: the page's, the JSON answer's, the database driver's. Here it
becomes the backslash escape ``\\ud800``, so the row is still shown and the event still
recorded, recognisably, and everything else around it goes through untouched.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, TypeVar

from app import log_names

__all__ = ["encodable", "escaped", "renderable_rows"]

logger = logging.getLogger(log_names.UNENCODABLE)

T = TypeVar("T")

# Most values of a row: nothing to encode, so answered before any other check.
_SCALARS = (int, float, type(None))

# Rows already logged as escaped (a page polled every second must not log every poll).
_LOGGED_MAX = 1000
_logged: set[tuple[str, object]] = set()


def encodable(value: object) -> bool:
    """Whether every text in ``value`` (a str, or dicts, lists, tuples and dataclasses
    of them, as deep as they go) can be encoded as UTF-8."""
    if isinstance(value, str):
        # isascii() is a flag check in C: the usual text costs nothing more.
        return value.isascii() or _utf8(value)
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, dict):
        return all(encodable(key) and encodable(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(encodable(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encodable([getattr(value, field.name) for field in dataclasses.fields(value)])
    return True


def escaped(value: T) -> T:
    """``value`` with every text that cannot be encoded as UTF-8 backslash-escaped (the
    same containers rebuilt around it); ``value`` itself when there is none."""
    if encodable(value):
        return value
    return _rebuilt(value)  # type: ignore[no-any-return]


def _rebuilt(value: Any) -> Any:
    result: Any
    if isinstance(value, str):
        result = value.encode("utf-8", "backslashreplace").decode("utf-8")
    elif isinstance(value, dict):
        result = {escaped(key): escaped(item) for key, item in value.items()}
    elif isinstance(value, list):
        result = [escaped(item) for item in value]
    elif type(value) is tuple:
        result = tuple(escaped(item) for item in value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        result = dataclasses.replace(
            value,
            **{
                field.name: escaped(getattr(value, field.name))
                for field in dataclasses.fields(value)
                if field.init
            },
        )
    else:
        result = value
    return result


def renderable_rows(rows: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    """``rows`` as a page may show them: each row checked alone, and one holding text
    that cannot be encoded shown with it escaped (logged once per row), never failing
    the page or the JSON answer for the rows around it."""
    shown = rows
    for index, row in enumerate(rows):
        if _row_encodable(row):
            continue
        if shown is rows:
            shown = list(rows)
        shown[index] = escaped(row)
        key = (what, row.get("id"))
        if key not in _logged:
            if len(_logged) >= _LOGGED_MAX:
                _logged.clear()
            _logged.add(key)
            logger.error(
                "%s %r holds text that cannot be encoded as UTF-8; shown escaped",
                what,
                row.get("id"),
            )
    return shown


def _row_encodable(row: dict[str, Any]) -> bool:
    """``encodable(row)`` for a flat row, fast: a page polls hundreds of rows a second.
    Its texts are checked joined, in C (joining never pairs up lone surrogates)."""
    texts = []
    for value in row.values():
        if isinstance(value, str):
            texts.append(value)
        elif not isinstance(value, _SCALARS) and not encodable(value):
            return False
    joined = "".join(texts)
    return joined.isascii() or _utf8(joined)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
