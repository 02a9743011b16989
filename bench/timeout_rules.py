"""Learned-timeout rules replayed over recorded step times (bench/record_step_times.py).

    python -m bench.timeout_rules            # bench/results/step_times.json
    python -m bench.timeout_rules --smoke    # its first 300 steps of each history

Each rule is replayed online, as an ``expires(after="auto")`` timer would live it: from
the 20th step on, step i is timed out by the rule applied to the (at most 1,000)
steps before it. Per rule and history:

- ``killed``: healthy steps longer than their timeout (each a job killed for nothing);
- ``timeout / median step``: the median timeout in steps, which is how long a hang
  runs before it is caught.

No floor here: the steps are milliseconds, and a floor of seconds would hide every
difference. The service's rule (app.db.scope_stats) is max(floor, 3 x p99, 1.5 x max);
nvidia-resiliency-ext's is 5 x the longest interval seen.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable

from app.db.scope_stats import suggested_timeout
from bench.common import RESULTS, print_table, save

_MIN_SAMPLES = 20
_WINDOW = 1000


def _p(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


Rule = Callable[[list[float]], float]
RULES: dict[str, Rule] = {
    "service: max(3 x p99, 1.5 x max)": lambda w: suggested_timeout(_p(w, 99), max(w), 0.0),
    "NVRx: 5 x max": lambda w: 5 * max(w),
    "3 x p99 alone": lambda w: 3 * _p(w, 99),
    "2 x p99 alone": lambda w: 2 * _p(w, 99),
}


def replay(holds: list[float], rule: Rule) -> tuple[int, float]:
    """(healthy steps killed, median timeout in median steps) of ``rule`` on ``holds``."""
    killed = 0
    timeouts = []
    for index in range(_MIN_SAMPLES, len(holds)):
        timeout = rule(holds[max(0, index - _WINDOW) : index])
        timeouts.append(timeout)
        killed += holds[index] > timeout
    return killed, statistics.median(timeouts) / statistics.median(holds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    source = RESULTS / "step_times.json"
    histories: dict[str, list[float]] = json.loads(source.read_text())["histories"]
    if args.smoke:
        histories = {name: holds[:300] for name, holds in histories.items()}
    rows = []
    results: dict[str, dict[str, dict[str, float]]] = {}
    for history, holds in histories.items():
        for name, rule in RULES.items():
            killed, in_steps = replay(holds, rule)
            rows.append([history, name, killed, in_steps])
            results.setdefault(history, {})[name] = {"killed": killed, "timeout_steps": in_steps}
    print_table(
        f"Learned-timeout rules on {source.name}",
        ["history", "rule", "healthy steps killed", "timeout / median step"],
        rows,
    )
    save("timeout_rules_smoke" if args.smoke else "timeout_rules", {"rules": results})


if __name__ == "__main__":
    main()
