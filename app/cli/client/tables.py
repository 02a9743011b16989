"""What the client prints: rich tables sized to the terminal, colour only on a terminal
(rich's Console decides, and honours ``NO_COLOR``), times in one format (UTC), ids
whole; and ``--json``, the service's body as it answered it. Every string from the
service reaches the terminal through ``safe_text`` (another user chose it)."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.cli.client.safe_text import plain, safe_json

__all__ = [
    "Column",
    "as_text",
    "console",
    "detail_text",
    "ident",
    "kind_text",
    "print_json",
    "ranks_text",
    "state_text",
    "table",
    "when",
]

# Piped into grep or a file there is no terminal to fit: lines as long as their cells,
# rather than rich's 80 columns, which would fold every row.
_UNBOUNDED_WIDTH = 1000
_PADDING = re.compile(r" +\n")
_MIN_TEXT_WIDTH = 5

_STATE_STYLES = {
    "active": "green",
    "released": "",
    "expired": "yellow",
    "killed": "bold red",
    "up": "green",
    "down": "bold red",
}
_KIND_STYLES = {
    "killed": "bold red",
    "kill_failed": "bold red",
    "unkillable": "bold red",
    "incident": "red",
    "expired": "yellow",
    "escalated": "yellow",
    "straggler": "yellow",
    "refused": "magenta",
    "worker_gone": "dim",
}


def console() -> Console:
    """A console on stdout: the terminal's width and colours, or none of either."""
    # Nor markup or emoji codes: a string another user chose is never read as either.
    if sys.stdout.isatty():
        return Console(highlight=False, markup=False, emoji=False)
    width = None if os.environ.get("COLUMNS") else _UNBOUNDED_WIDTH
    return Console(
        file=_TrimmedLines(),
        highlight=False,
        markup=False,
        emoji=False,
        width=width,
        soft_wrap=True,
    )


class _TrimmedLines(io.StringIO):
    """stdout without the spaces rich pads a table's last column with: a file or a
    pipe gets lines that end where their text does."""

    def write(self, text: str) -> int:
        sys.stdout.write(_PADDING.sub("\n", text))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


def print_json(body: Any) -> None:
    """The service's JSON, indented: equal, as JSON, to what it answered."""
    sys.stdout.write(safe_json(body, indent=2) + "\n")


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Mapping[str, Any]], str | Text]
    # Free text (a scope, a job id, a summary) folds onto more lines in a narrow
    # terminal; every other cell keeps whole: an id is what the next command takes.
    text: bool = False
    justify: str = "left"


def table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> Table:
    # No lines around cells, as kubectl prints: awk and cut read the rows as they are.
    shown = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        shown.add_column(
            column.header,
            no_wrap=not column.text,
            min_width=_MIN_TEXT_WIDTH if column.text else None,
            overflow="fold",
            justify=column.justify,  # type: ignore[arg-type]
        )
    for row in rows:
        shown.add_row(*(as_text(column.cell(row)) for column in columns))
    return shown


def as_text(cell: str | Text) -> Text:
    """A cell for rich: a string as ``plain`` text (never markup); a ``Text`` is built
    here by ``plain`` already."""
    return cell if isinstance(cell, Text) else plain(cell)


def when(seconds: float | None) -> str:
    """A unix time as every page of the service writes it: UTC, to the second."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ident(value: object) -> str:
    """An id (or rank, pid), whole; "-" when unknown."""
    return "-" if value is None else str(value)


def state_text(state: str) -> Text:
    return plain(state, style=_STATE_STYLES.get(state, ""))


def kind_text(kind: str) -> Text:
    return plain(kind, style=_KIND_STYLES.get(kind, ""))


def detail_text(detail: Mapping[str, Any]) -> str:
    """An event's detail as ``key=value`` pairs (nested values as compact JSON)."""
    return " ".join(f"{key}={_value(value)}" for key, value in detail.items())


def _value(value: Any) -> str:
    if isinstance(value, float):
        # Seconds to the tenth of a millisecond: latency=0.1975, not 0.19752546673407778.
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, str | int):
        return str(value)
    return _compact(value)


def ranks_text(ranks: Iterable[int | None]) -> str:
    """Ranks as runs: ``0-2, 5``; an unknown rank is ``?``."""
    ranks = list(ranks)
    known = sorted({rank for rank in ranks if rank is not None})
    runs: list[str] = []
    start = previous = None
    for rank in [*known, None]:
        if start is not None and previous is not None and rank == previous + 1:
            previous = rank
            continue
        if start is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = rank
    if None in ranks:
        runs.append("?")
    return ", ".join(runs) or "-"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
