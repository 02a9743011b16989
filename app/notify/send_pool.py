"""The sender's threads: a few daemon threads that run sends off the sender's loop.

Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined when the
interpreter exits, even after ``shutdown(wait=False)``, so a send stuck on a slow
receiver held the service's exit for as long as the send took. A send cut short by
the exit loses nothing: its delivery keeps its lease, and the next start (or another
node) sends it again with the same delivery id.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["SendPool"]

_T = TypeVar("_T")
_Work = tuple[concurrent.futures.Future[None], Callable[[], None]]


class SendPool:
    def __init__(self, workers: int, name: str) -> None:
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, function: Callable[[_T], None], argument: _T
    ) -> concurrent.futures.Future[None]:
        """Run ``function(argument)`` on one of the threads; its future, done when it is."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._work.put((future, lambda: function(argument)))
        return future

    def shutdown(self) -> None:
        """Run nothing more: the threads end after what they are running (not waited
        for); what waits its turn is dropped, its future cancelled."""
        while True:
            try:
                work = self._work.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work[0].cancel()
        for _ in self._threads:
            self._work.put(None)

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            future, run = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                run()
            except BaseException as error:  # the sends catch their own; this is a flaw
                future.set_exception(error)
            else:
                future.set_result(None)
