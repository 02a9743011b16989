"""``GET /incidents`` stops a page at about 1 MiB of JSON, as ``GET /timers`` does, and
its ``next`` goes on exactly where the page stopped; a job's page lists its ranks up to
about 1 MiB and counts the rest (issue 20).

An incident holds the frames of its ranks' stacks: up to 256 KiB of text a worker
chose per rank. Before the cut, ``?limit=1000`` of such incidents was one answer of
hundreds of MB, built whole in the watchdog's memory, and the page cap of issue 20
was bypassed through this route. Here each incident carries about 200 KB of frames.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.db.job_models import Incident
from app.db.pagination import MAX_PAGE_BYTES
from app.main import create_app
from app.settings import Settings
from tests.app.job_seeds import JobSeed, seed
from tests.conftest import in_process, migrated_engine
from tests.sample_events import changed

INCIDENTS = 30
# 200 frames of 1,000 characters: about 200 KB of JSON per incident.
FRAMES = ["f" * 990 + f" (x.py:{line})" for line in range(200)]


def seed_big_incidents(database: Path) -> list[int]:
    engine = migrated_engine(database)
    with Session(engine) as session:
        rows = [
            Incident(
                job_id=f"run-{number}",
                opened_at=time.time() + number,
                node="node-a",
                uid=1000,
                summary="rank 0 stuck in f (x.py:1)",
                groups=[{"group": 0, "ranks": [0], "frames": FRAMES}],
                nodes=["node-a"],
            )
            for number in range(INCIDENTS)
        ]
        session.add_all(rows)
        session.commit()
        ids = [row.id for row in rows]
    engine.dispose()
    assert all(isinstance(item, int) for item in ids)
    return sorted((item for item in ids if item is not None), reverse=True)


def pages(client: TestClient, limit: int) -> list[dict[str, Any]]:
    """Every page of ``GET /incidents?limit=``, following ``next``."""
    found = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/incidents", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        page["bytes"] = len(response.content)
        found.append(page)
        cursor = page["next"]
        if cursor is None:
            return found
        assert len(found) <= INCIDENTS, "the cursor does not advance"


def test_incident_pages_stop_at_about_a_mebibyte_and_go_on_exactly(tmp_path: Path) -> None:
    database = tmp_path / "timers.db"
    ids = seed_big_incidents(database)
    with in_process(create_app(Settings(db_url=f"sqlite:///{database}"))) as client:
        walked = pages(client, limit=1000)
        # Each page stops once it passed the cap: at most one incident (200 KB) over.
        assert all(page["bytes"] < MAX_PAGE_BYTES + 300_000 for page in walked), [
            page["bytes"] for page in walked
        ]
        assert len(walked) >= 5  # 30 x 200 KB: cut, not answered whole
        assert all(page["items"] for page in walked)
        listed = [item["id"] for page in walked for item in page["items"]]
        # Newest first, each exactly once: nothing skipped or doubled at a cut.
        assert listed == ids
        assert walked[0]["items"][0]["groups"][0]["frames"] == FRAMES

        # A limit below the cut still pages exactly, chunk boundaries included.
        for limit in (1, 7, 20, 21):
            assert [item["id"] for page in pages(client, limit) for item in page["items"]] == ids


def test_a_job_of_many_ranks_lists_the_first_within_a_page_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    # A worker's labels choose its rank: 400 ranks with 1,024-emoji scope ids (4 KB of
    # JSON each) were one answer of 1.7 MB, and 100,000 of them would be 400 MB.
    database = tmp_path / "timers.db"
    job = JobSeed("many-ranks", first_id=1, world_size=400, stuck=None)
    few = JobSeed("few-ranks", first_id=1000, world_size=3, stuck=None)
    seed(
        database,
        *(changed(item, scope_id="🦀" * 1024) for item in job.events()),
        *few.events(),
    )
    with in_process(create_app(Settings(db_url=f"sqlite:///{database}"))) as client:
        response = client.get("/jobs/many-ranks")
        assert response.status_code == 200, response.text
        detail = response.json()
        assert len(response.content) < MAX_PAGE_BYTES + 10_000
        listed = [rank["rank"] for rank in detail["ranks"]]
        assert listed == list(range(len(listed))) and 100 < len(listed) < 400
        assert detail["ranks_omitted"] == 400 - len(listed)
        page = client.get("/ui/jobs/many-ranks")
        assert page.status_code == 200
        assert f"{400 - len(listed)} more ranks are not shown" in page.text

        whole = client.get("/jobs/few-ranks").json()
        assert [rank["rank"] for rank in whole["ranks"]] == [0, 1, 2]
        assert whole["ranks_omitted"] == 0
