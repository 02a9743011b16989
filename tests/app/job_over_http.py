"""A labelled job on the real service, over HTTP: a timer armed for one of its ranks,
its one incident read back once whole, and any read of the REST API that must answer."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx

from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until

__all__ = ["arm_rank", "rest", "whole_incident"]


def rest(service: ServiceProcess, path: str, **params: Any) -> Any:
    """The JSON of ``GET path?params``, which must answer 200."""
    answer = httpx.get(service.url + path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def arm_rank(
    service: ServiceProcess, pid: int, job_id: str, rank: int, world_size: int, expires_in: float
) -> dict[str, Any]:
    """The timer armed (201) for ``pid``'s step as ``rank`` of ``world_size`` in
    ``job_id``."""
    body = {
        "pid": pid,
        "scope_id": "step",
        "expires_in": expires_in,
        "job_id": job_id,
        "rank": rank,
        "world_size": world_size,
    }
    answer = httpx.post(service.url + "/timers", json=body)
    assert answer.status_code == 201, answer.text
    timer: dict[str, Any] = answer.json()
    return timer


def whole_incident(
    service: ServiceProcess, job_id: str, ranks: int, killed: Collection[int] = ()
) -> dict[str, Any]:
    """The job's one incident (``GET /incidents/{id}``), once it holds ``ranks`` ranks
    and the kill of each rank in ``killed`` has joined it; the test fails if it is not
    so within 30 s."""

    def whole() -> dict[str, Any] | None:
        answer = httpx.get(service.url + "/incidents", params={"job": job_id})
        assert answer.status_code == 200, answer.text
        listed = answer.json()["items"]
        if len(listed) != 1 or len(listed[0]["ranks"]) != ranks:
            return None
        if any(r["outcome"] == "captured" for r in listed[0]["ranks"] if r["rank"] in killed):
            return None  # a kill has not joined yet
        found = httpx.get(f"{service.url}/incidents/{listed[0]['id']}")
        assert found.status_code == 200, found.text
        incident: dict[str, Any] = found.json()
        return incident

    assert wait_until(lambda: whole() is not None, 30), service.log()[-3000:]
    incident = whole()
    assert incident is not None
    return incident
