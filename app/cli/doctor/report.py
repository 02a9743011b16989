"""How doctor prints its results: one aligned line per check, the fix after it, a
summary line; colour only on a terminal (rich drops it elsewhere, and for NO_COLOR);
or, with ``--json``, the list of results for tooling."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.text import Text

from .results import Result, Status

__all__ = ["print_json", "print_table", "summary"]

_STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def summary(results: Sequence[Result]) -> str:
    counts = Counter(result.status for result in results)
    line = f"{counts[Status.OK]} ok, {counts[Status.WARN]} warn, {counts[Status.FAIL]} fail"
    if counts[Status.FAIL]:
        return f"{line}: a service started with these settings would miss what fails above"
    if counts[Status.WARN]:
        return f"{line}: the service can start; the warnings say what it would do less well"
    return f"{line}: this host is ready for the service"


def print_table(results: Sequence[Result], out: TextIO) -> None:
    # soft_wrap: a line longer than the terminal folds there, not at rich's 80 columns
    # when the output is a pipe or a file.
    console = Console(file=out, highlight=False, soft_wrap=True)
    width = max((len(result.name) for result in results), default=0)
    for result in results:
        line = Text()
        line.append(f"{result.status:<4}", style=_STYLES[result.status])
        line.append(f"  {result.name:<{width}}  {result.found}")
        if result.fix:
            line.append("  fix: ", style="bold")
            line.append(result.fix)
        console.print(line)
    console.print(Text(summary(results), style="bold"))


def print_json(results: Sequence[Result], out: TextIO) -> None:
    json.dump([result.as_json() for result in results], out, indent=2)
    out.write("\n")
