"""The terminal client: ``timer-service timers|jobs|incidents|events|nodes``,
``incident ID`` and ``stack TIMER_ID``, talking to a running service."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the client's subcommands (being built: issue 25)."""
