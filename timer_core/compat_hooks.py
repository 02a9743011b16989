"""What code written against torch's timer servers reaches into, honoured here.

Torch's servers keep their timers in ``_timers`` and kill through ``_reap_worker``
(and, for the FIFO server, ask ``is_process_running`` first). Tests and monitoring
code read ``_timers``, and subclasses (or ``mock.patch``) override the two methods.
The engine keeps its own state and signals through a ``ProcessSignaller``; this module
lets the compat servers offer the same hooks:

- ``timers_view`` is a read-only snapshot of the live timers keyed like torch's.
- ``HookedSignaller`` sends through an overridden ``_reap_worker``, after the engine's
  own refusals (its own process, its ancestors, pid <= 1, process groups): an override
  decides *how* a worker is reaped, never *whether* a protected pid may be.

Overrides are looked up at each kill, because ``mock.patch`` replaces a method on the
class after the server was built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from .engine.process import ProcessIdentity, ProcessSignaller, SignalOutcome
from .engine.reaper import Reaper
from .engine.timers import Timer

__all__ = ["HookedSignaller", "is_overridden", "reaped", "timers_view"]

RequestT = TypeVar("RequestT")
ReapHook = Callable[[ProcessIdentity, int], SignalOutcome | None]


def is_overridden(instance: object, name: str, original: object) -> bool:
    """Whether ``instance``'s class (or a patch on it) replaced method ``name``."""
    return getattr(type(instance), name, original) is not original


def timers_view(
    reaper: Reaper, make: Callable[[Timer], RequestT]
) -> Mapping[tuple[int, str], RequestT]:
    """A read-only snapshot of the live timers, keyed ``(pid, scope_id)`` as torch's."""
    return MappingProxyType({(view.pid, view.scope_id): make(view) for view in reaper.active()})


class HookedSignaller(ProcessSignaller):
    """Signals through ``hook`` when it answers (an overridden ``_reap_worker``), else
    as a plain ``ProcessSignaller``."""

    def __init__(self, hook: ReapHook, **options: Any) -> None:
        super().__init__(**options)
        self._hook = hook

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        refusal = self.refusal(identity.pid)
        if refusal is not None:
            return SignalOutcome(False, "failed", refusal)
        outcome = self._hook(identity, signum)
        return outcome if outcome is not None else super().send(identity, signum)


def reaped(result: object) -> SignalOutcome:
    """The outcome of an overridden ``_reap_worker``, which answers True or False."""
    if result:
        return SignalOutcome(True, "delivered", "")
    return SignalOutcome(False, "failed", "_reap_worker returned False")
