"""Which job and rank a worker is: read from what torchrun puts in its environment.

``torchrun`` (torch.distributed.elastic) starts every worker with ``TORCHELASTIC_RUN_ID``
(the job), ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``TORCHELASTIC_RESTART_COUNT``
(how many times the agent has restarted the job's workers). Reading them from
``/proc/PID/environ`` labels a worker whatever client it uses, torch's unmodified
``FileTimerClient`` included. The environment is the worker's to write: anything that
is not a well-formed label becomes null, never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

__all__ = [
    "MAX_JOB_ID_LENGTH",
    "MAX_RANK",
    "NO_LABELS",
    "Labels",
    "labels_from_environ",
    "read_labels",
]

MAX_JOB_ID_LENGTH = 256
# An environment is at most a few MiB; the labels are near its start in practice, and
# a bounded read keeps a hostile one from costing more than this.
_MAX_ENVIRON_BYTES = 1 << 20
MAX_RANK = 1 << 24
_KEYS = {
    b"TORCHELASTIC_RUN_ID",
    b"RANK",
    b"LOCAL_RANK",
    b"WORLD_SIZE",
    b"TORCHELASTIC_RESTART_COUNT",
}


@dataclass(frozen=True, slots=True)
class Labels:
    job_id: str | None = None
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    # Which incarnation of the job's workers: a worker restarted by torchrun's agent
    # after a failure counts one more.
    restart_count: int | None = None

    def merged(self, explicit: Labels) -> Labels:
        """These labels, each overridden by the one given ``explicit``ly, if any."""
        given = {field.name: getattr(explicit, field.name) for field in fields(explicit)}
        return replace(self, **{name: value for name, value in given.items() if value is not None})


# A worker of no job (frozen, so one instance serves every timer).
NO_LABELS = Labels()


def read_labels(pid: int) -> Labels:
    """The labels in the environment of process ``pid`` (all null if unreadable)."""
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return Labels()
    try:
        chunks: list[bytes] = []
        size = 0
        while size < _MAX_ENVIRON_BYTES:
            chunk = os.read(fd, min(65536, _MAX_ENVIRON_BYTES - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return Labels()
    finally:
        os.close(fd)
    return labels_from_environ(b"".join(chunks))


def labels_from_environ(environ: bytes) -> Labels:
    """The labels in a NUL-separated environment block."""
    found: dict[bytes, bytes] = {}
    for entry in environ.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key in _KEYS:
            found[key] = value
    world_size = _count(found.get(b"WORLD_SIZE"), minimum=1)
    rank = _count(found.get(b"RANK"), minimum=0)
    if rank is not None and world_size is not None and rank >= world_size:
        rank = None  # inconsistent: trust neither more than the other, keep the size
    return Labels(
        job_id=_job_id(found.get(b"TORCHELASTIC_RUN_ID")),
        rank=rank,
        local_rank=_count(found.get(b"LOCAL_RANK"), minimum=0),
        world_size=world_size,
        restart_count=_count(found.get(b"TORCHELASTIC_RESTART_COUNT"), minimum=0),
    )


def _count(raw: bytes | None, minimum: int) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 9:
        return None
    value = int(raw)
    return value if minimum <= value < MAX_RANK else None


def _job_id(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or len(text) > MAX_JOB_ID_LENGTH or not text.isprintable():
        return None
    return text
