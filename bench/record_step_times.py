"""Record real training-step times, the histories bench/timeout_rules.py replays.

    python -m bench.record_step_times            # 2,000 steps per history
    python -m bench.record_step_times --smoke    # 300

Each history is a real torch (CPU) training loop, timed per step the way a worker's
``with timer.expires(after=...):`` block holds its timer:

- ``mlp-checkpoint``: an MLP, its model and optimizer saved (and fsync'd) every 200
  steps, inside the step: the rare long step a timeout must not kill.
- ``mlp-busy-node``: the same, pinned to one CPU, where from the middle of the run on a
  second process spins: every step slows down, as on a node that got busier.
- ``ddp-gloo-2``: two ranks (gloo), each step a forward, a backward and the gradients'
  all-reduce (DistributedDataParallel): rank 0's steps, collectives included.

Writes bench/results/step_times[_smoke].json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import save

_CHECKPOINT_EVERY = 200


def _model() -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256)
    )


def _train(steps: int, checkpoint: Path | None, spin_from: int | None) -> list[float]:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    batch = torch.randn(256, 256)
    spinner: multiprocessing.process.BaseProcess | None = None
    holds = []
    try:
        for step in range(steps):
            if step == spin_from:
                spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
                spinner.start()
            began = time.perf_counter()
            loss = model(batch).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if checkpoint is not None and step % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                with checkpoint.open("wb") as file:
                    torch.save({"model": model.state_dict(), "opt": optimizer.state_dict()}, file)
                    file.flush()
                    os.fsync(file.fileno())
            holds.append(time.perf_counter() - began)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.join()
    return holds


def _spin() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    while True:
        pass


def _ddp_rank(rank: int, port: int, steps: int, out: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(rank)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    optimizer = torch.optim.Adam(model.parameters())
    batch = torch.randn(256, 256)
    holds = []
    for _ in range(steps):
        began = time.perf_counter()
        loss = model(batch).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        holds.append(time.perf_counter() - began)
    dist.destroy_process_group()
    if rank == 0:
        out.put(holds)


def _ddp(steps: int) -> list[float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    ranks = [context.Process(target=_ddp_rank, args=(r, port, steps, out)) for r in range(2)]
    for process in ranks:
        process.start()
    holds: list[float] = out.get(timeout=600)
    for process in ranks:
        process.join(60)
    return holds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    steps = 300 if args.smoke else 2000
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        histories = {
            "mlp-checkpoint": _train(steps, Path(tmp) / "ckpt.pt", None),
            "mlp-busy-node": _train(steps, None, steps // 2),
        }
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    histories["ddp-gloo-2"] = _ddp(steps)
    for name, holds in histories.items():
        print(
            f"{name}: {len(holds)} steps, median {sorted(holds)[len(holds) // 2] * 1e3:.1f} ms,"
            f" max {max(holds) * 1e3:.1f} ms"
        )
    save("step_times_smoke" if args.smoke else "step_times", {"histories": histories})


if __name__ == "__main__":
    main()
