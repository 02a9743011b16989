"""``log_debug_info_for_expired_timers``, as torch's module of this name has it: the
FileTimerServer calls it for every worker whose timers expired, so code (and tests)
that patch or wrap it keep working."""

from __future__ import annotations

import logging

from . import log_names

__all__ = ["log_debug_info_for_expired_timers"]

logger = logging.getLogger(log_names.DEBUG_INFO)


def log_debug_info_for_expired_timers(run_id: str, expired_timers: dict[int, list[str]]) -> None:
    if expired_timers:
        logger.info("Timers expired for run:[%s] [%s].", run_id, expired_timers)
