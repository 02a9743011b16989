"""``GET /scopes`` and ``GET /scopes/whatif`` over HTTP (contract 12): the answers'
shape, the settings they take, and bad input refused with a 422 that says why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.hold_history import Hold, nearest_rank, record, scope_history
from tests.conftest import in_process, migrated_engine

# Thirty steps of 1 to 4 s of one job's scope, then one hang killed after 60 s.
STEPS = [1.0 + (n % 7) / 2 for n in range(30)]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    database = tmp_path_factory.mktemp("scopes") / "timers.db"
    engine = migrated_engine(database)
    holds = [Hold(s) for s in STEPS] + [Hold(60.0, hung=True)]
    record(engine, scope_history(holds, job="run/7 <b>", scope="step", first_id=1))
    engine.dispose()
    settings = Settings(db_url=f"sqlite:///{database}", auto_floor=2.0)
    with in_process(create_app(settings)) as test_client:
        yield test_client


def test_scopes_answer_the_statistics_and_the_suggestion(client: TestClient) -> None:
    response = client.get("/scopes", params={"job": "run/7 <b>"})
    assert response.status_code == 200, response.text
    p99 = nearest_rank(STEPS, 99)
    assert response.json() == {
        "items": [
            {
                "job_id": "run/7 <b>",
                "uid": 1000,
                "scope_id": "step",
                "count": 30,
                "p50": nearest_rank(STEPS, 50),
                "p90": nearest_rank(STEPS, 90),
                "p99": p99,
                "max": 4.0,
                "suggested_timeout": max(2.0, 3 * p99, 1.5 * 4.0),
                "window": 1000,
            }
        ],
        "next": None,
    }
    narrow = client.get("/scopes", params={"scope": "step", "window": 10}).json()["items"]
    assert [(i["count"], i["max"]) for i in narrow] == [(10, max(STEPS[-10:]))]
    assert client.get("/scopes", params={"job": "other"}).json() == {"items": [], "next": None}
    # One owner's: the workers' uid (-1: unknown).
    for uid, count in ((1000, 1), (1001, 0), (-1, 0)):
        mine = client.get("/scopes", params={"job": "run/7 <b>", "uid": uid}).json()["items"]
        assert len(mine) == count, (uid, mine)


def test_whatif_replays_a_timeout(client: TestClient) -> None:
    response = client.get(
        "/scopes/whatif", params={"job": "run/7 <b>", "scope": "step", "timeout": 3.5}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "timeout": 3.5,
        "considered": 31,
        "would_have_killed": sum(s > 3.5 for s in STEPS),
        "hung": 1,
        "earlier_by_seconds": 56.5,
        "hangs": 1,
    }
    # The last ten steps only, and the hang after them.
    recent = client.get(
        "/scopes/whatif", params={"job": "run/7 <b>", "scope": "step", "timeout": 3.5, "window": 10}
    ).json()
    assert (recent["considered"], recent["hangs"]) == (11, 1)
    assert recent["would_have_killed"] == sum(s > 3.5 for s in STEPS[-10:])
    # The owner's job of that id: another uid's has nothing recorded.
    other = client.get(
        "/scopes/whatif", params={"job": "run/7 <b>", "scope": "step", "timeout": 3.5, "uid": 7}
    ).json()
    assert other["considered"] == 0


def test_whatif_without_a_job_says_to_pass_one(client: TestClient) -> None:
    response = client.get("/scopes/whatif", params={"scope": "step", "timeout": 3.5})
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", "job"] and "pass job=" in problem["msg"]


@pytest.mark.parametrize(
    "params",
    [
        {"scope": "step"},
        {"timeout": "5"},
        {"scope": "step", "timeout": "nan"},
        {"scope": "step", "timeout": "inf"},
        {"scope": "step", "timeout": "0"},
        {"scope": "step", "timeout": "-1"},
        {"scope": "step", "timeout": "1e300"},
        {"scope": "step", "timeout": "five"},
        {"scope": "", "timeout": "5"},
        {"scope": "step", "timeout": "5", "timout": "6"},
        {"scope": "step", "timeout": "5", "window": "0"},
        {"scope": "step", "timeout": "5", "window": "100001"},
    ],
)
def test_whatif_refuses_bad_input(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/scopes/whatif", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"window": "0"},
        {"window": "100001"},
        {"limit": "0"},
        {"job": "x" * 257},
        {"jobs": "a"},
        {"uid": "-2"},
        {"uid": str(2**32)},
        {"cursor": "bm90IG91cnM="},
        {"cursor": "!"},
        {"job": "run", "cursor": "WzEuMCwgImEiLCAxXQ=="},
    ],
)
def test_scopes_refuse_bad_input(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/scopes", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_the_job_page_shows_its_scopes_and_offers_the_whatif(client: TestClient) -> None:
    page = client.get("/ui/jobs/run/7 <b>")
    assert page.status_code == 200, page.text
    assert "<b>" not in page.text  # the job id is text, not markup
    assert 'data-scope-id="step"' in page.text
    assert 'name="whatif_scope" value="step"' in page.text
    assert "whatif-answer" not in page.text
    asked = client.get(
        "/ui/jobs/run/7 <b>", params={"whatif_scope": "step", "whatif_timeout": "3.5"}
    )
    assert asked.status_code == 200, asked.text
    killed = sum(s > 3.5 for s in STEPS)
    assert f'data-would-have-killed="{killed}" data-hung="1"' in asked.text
    assert f"would have killed {killed} healthy holds, and caught 1 of 1 hangs" in asked.text
    refused = client.get("/ui/jobs/run/7 <b>", params={"whatif_timeout": "nan"})
    assert refused.status_code == 422
