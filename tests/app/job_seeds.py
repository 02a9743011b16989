"""Jobs and incidents written the way the service writes them: labelled engine events
fed to the real recorder (``app.db.recorder.Recorder`` with an ``IncidentRecorder``), so
the jobs table, the incidents, their captures and the analysis (groups, suspects,
summary) over recorded real torchrun stacks are the service's own."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx

from app.db.incident_rows import IncidentRecorder
from app.db.recorder import Recorder
from tests.conftest import migrated_engine
from tests.sample_events import changed, event, timer
from timer_core import EventKind, TimerEvent
from timer_core.engine import CapturedStack, Labels, RankStack

__all__ = ["BASE", "RECORDERS", "SLEEPING", "WAITING", "JobSeed", "incident_of", "seed"]

STACKS = Path(__file__).parent.parent / "timer_core" / "diagnosis" / "stacks"
SLEEPING = (STACKS / "gloo-sleep.txt").read_text()
WAITING = (STACKS / "gloo-allreduce.txt").read_text()
RECORDERS = STACKS.parent / "collectives"
# Not the host name, which a service started on the seeded database takes as its node:
# it re-arms only its own node's timers, so these stay as seeded.
NODE = "node-a"
# Seeded times are recent: the service's retention prunes what is older than a week.
BASE = float(int(time.time()) - 3600)


@dataclasses.dataclass(frozen=True, slots=True)
class JobSeed:
    """One job of ``world_size`` ranks: rank r has timer ``first_id + r``, pid
    ``first_pid + r``, owned by ``uid``, acquired at ``at + r``. With ``stuck`` set, the
    job hangs at ``at + 10``: an incident captures every rank (``stuck`` asleep, the others
    in all_reduce, ``missing`` without a stack) and ``stuck`` is killed."""

    job_id: str
    first_id: int
    world_size: int = 4
    stuck: int | None = 2
    uid: int = 1000
    node: str = NODE
    at: float = BASE
    first_pid: int = 500
    missing: int | None = None
    # A directory of recorded flight-recorder dumps (tests/timer_core/diagnosis/
    # collectives/<name>/rank{r}.json): each rank's stack then came from its worker
    # server, with its dump.
    recorders: str | None = None

    def pid(self, rank: int) -> int:
        return self.first_pid + rank

    def labelled(self, kind: str, rank: int, state: str, at: float) -> TimerEvent:
        made = event(0, kind, self.first_id + rank, state)
        return changed(
            made,
            at=at,
            pid=self.pid(rank),
            scope_id=f"step-{rank}",
            uid=self.uid,
            node=self.node,
            job_id=self.job_id,
            rank=rank,
            local_rank=rank,
            world_size=self.world_size,
            acquired_at=self.at + rank,
        )

    def _capture(self, rank: int) -> RankStack:
        view = timer(
            self.first_id + rank,
            pid=self.pid(rank),
            scope_id=f"step-{rank}",
            acquired_at=self.at + rank,
            expiration_time=self.at + 5,
            uid=self.uid,
            node=self.node,
            labels=Labels(self.job_id, rank, rank, self.world_size),
        )
        if rank == self.missing:
            return RankStack(view, None, "the capture failed: gone", False)
        text = SLEEPING if rank == self.stuck else WAITING
        if self.recorders is not None:
            dump = (RECORDERS / self.recorders / f"rank{rank}.json").read_bytes()
            stack = CapturedStack("worker-server", text, 0.002, flight_recorder=dump)
            return RankStack(view, stack, "", rank == self.stuck)
        return RankStack(view, CapturedStack("py-spy", text, 0.2), "", rank == self.stuck)

    def events(self) -> list[TimerEvent]:
        made = [
            self.labelled(EventKind.ACQUIRED, rank, "active", self.at + rank)
            for rank in range(self.world_size)
        ]
        if self.stuck is not None:
            hung = self.at + 10
            captures = tuple(self._capture(rank) for rank in range(self.world_size))
            incident = self.labelled(EventKind.INCIDENT, self.stuck, "active", hung)
            made.append(changed(incident, captures=captures))
            made.append(self.labelled(EventKind.KILLED, self.stuck, "killed", hung + 0.1))
        return made


def seed(database: Path, *jobs: JobSeed | TimerEvent) -> None:
    """Record ``jobs`` (and loose events), in order, into the SQLite file ``database``,
    migrated first; each event gets the next sequence number."""
    engine = migrated_engine(database)
    recorder = Recorder(engine, incidents=IncidentRecorder(NODE, 60.0))
    events = [e for job in jobs for e in (job.events() if isinstance(job, JobSeed) else [job])]
    for seq, item in enumerate(events, start=1):
        recorder(changed(item, seq=seq))
    recorder.flush()
    engine.dispose()


def incident_of(service_url: str, job_id: str) -> dict[str, Any]:
    """The one incident a service on the seeded database lists for ``job_id``."""
    items = httpx.get(service_url + "/incidents", params={"job": job_id}).json()["items"]
    assert len(items) == 1
    return dict(items[0])
