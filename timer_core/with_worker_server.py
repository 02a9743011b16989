"""Run a training script with torch's worker server started for it, changing no line of
it: the zero-code way to opt in, for a worker that uses torch's own timer client.

    python -m timer_core.with_worker_server train.py [ARGS...]
    python -m timer_core.with_worker_server -m package.module [ARGS...]
    torchrun --nproc-per-node 4 -m timer_core.with_worker_server train.py [ARGS...]

Each process starts its server on a private socket (``own_worker_server``), then runs
the script (or module) as ``__main__`` with ``sys.argv`` as it would have had: the
server lives in the script's own process, where the service looks for it.
"""

from __future__ import annotations

import os
import runpy
import sys

from .own_worker_server import WorkerServerUnavailable, start_worker_server

__all__ = ["main"]

USAGE = (
    "usage: python -m timer_core.with_worker_server SCRIPT [ARGS...]\n"
    "       python -m timer_core.with_worker_server -m MODULE [ARGS...]\n"
    "Runs SCRIPT (or MODULE) as __main__ with torch's worker server started for this process."
)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return
    if not args or args == ["-m"]:
        raise SystemExit(f"{USAGE}\nerror: no script given")
    try:
        start_worker_server()
    except WorkerServerUnavailable as error:
        raise SystemExit(f"timer_core.with_worker_server: {error}") from None
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]  # run_module puts the module's file first
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        # As ``python SCRIPT`` has it: the script's directory first on the path, so
        # that it imports the modules beside it.
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
