"""The dashboard's poll at scale: how long ``GET /dashboard/state`` takes with N timers.

    python -m bench.dashboard_state            # 1k, 10k, 100k active timers
    python -m bench.dashboard_state --smoke    # 1k

Every open dashboard polls this twice a second, so it must stay cheap when a
large job holds many timers. Median of 20 requests through the real app.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from bench.common import print_table, save, spawn_sleeper
from timer_core.engine.arm_request import ArmRequest, Origin

_READS = 20


def measure(timers: int) -> float:
    worker = spawn_sleeper()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(Settings(db_url=f"sqlite:///{tmp}/dashboard.db"))
            with TestClient(app, base_url="http://localhost") as client:
                reaper = app.state.service.timers_here()
                far = time.time() + 3600
                for index in range(timers):
                    reaper.acquire(
                        ArmRequest(worker.pid, f"step-{index}", far + index), Origin("bench")
                    )
                timings = []
                for _ in range(_READS):
                    began = time.perf_counter()
                    assert client.get("/dashboard/state").status_code == 200
                    timings.append(time.perf_counter() - began)
                return 1000 * statistics.median(timings)
    finally:
        worker.kill()
        worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [1000] if args.smoke else [1000, 10_000, 100_000]
    results = [{"timers": n, "median_ms": measure(n)} for n in sizes]
    print_table(
        "GET /dashboard/state (median of 20)",
        ["active timers", "median ms"],
        [[r["timers"], r["median_ms"]] for r in results],
    )
    save("dashboard_state_smoke" if args.smoke else "dashboard_state", {"rows": results})


if __name__ == "__main__":
    main()
