"""``timer-service doctor``: checks this host for what a service started with the same
flags needs."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``doctor`` (being built: issue 25)."""
