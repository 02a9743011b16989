"""Two real node services of one fleet on one real PostgreSQL database, for the
notification tests that need a fleet (one sender per notification, a node's outage)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.app.service_process import ServiceProcess

__all__ = ["NODE_NAMES", "fleet_nodes"]

NODE_NAMES = ("node-a", "node-b")


@contextmanager
def fleet_nodes(
    tmp_path: Path, postgres_url: str, *flags: str
) -> Iterator[dict[str, ServiceProcess]]:
    """``node-a`` and ``node-b``, each started with ``flags`` (side by side: a start
    waits for the service to answer), by name; stopped on the way out."""
    made: dict[str, ServiceProcess] = {}
    for name in NODE_NAMES:
        workdir = tmp_path / name
        workdir.mkdir()
        made[name] = ServiceProcess(workdir, "--node-name", name, *flags)
        made[name].db_url = postgres_url
    try:
        with concurrent.futures.ThreadPoolExecutor(len(made)) as pool:
            for started in [pool.submit(node.start) for node in made.values()]:
                started.result()
        yield made
    finally:
        for running in made.values():
            running.stop()
