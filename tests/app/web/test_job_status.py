"""A job's status and the suspects its grid marks (app/web/job_status.py), on jobs as
``GET /jobs/{id}`` answers them: each rule of the status, the words that name ranks,
and the suspects of an incident marked only while it is the job's present. The pages
that show them are tested in real Chromium (test_job_status_browser.py)."""

from __future__ import annotations

from typing import Any

import pytest

from app.web.job_status import job_status, ranks_text, suspects_marked


def rank(number: int | None, state: str, timer_id: int) -> dict[str, Any]:
    return {"rank": number, "state": state, "timer_id": timer_id}


def job(*ranks: dict[str, Any], active: int | None = None) -> dict[str, Any]:
    counted = sum(1 for item in ranks if item["state"] == "active")
    return {"ranks": list(ranks), "active_timers": counted if active is None else active}


def incident(suspects: list[int | None], captured: list[int | None]) -> dict[str, Any]:
    return {"suspects": suspects, "ranks": [{"timer_id": timer_id} for timer_id in captured]}


def test_a_job_with_an_active_timer_and_nothing_run_out_is_running() -> None:
    status = job_status(job(rank(0, "active", 1), rank(1, "released", 2)))
    assert status == {"status": "running", "text": "1 active timer"}


def test_an_older_active_timer_behind_a_released_latest_keeps_the_job_running() -> None:
    # Nested scopes: each rank's latest (inner) timer released, its outer one active.
    status = job_status(job(rank(0, "released", 3), rank(1, "released", 4), active=2))
    assert status == {"status": "running", "text": "2 active timers"}


def test_a_job_whose_ranks_all_released_their_last_timer_is_finished() -> None:
    status = job_status(job(rank(0, "released", 1), rank(1, "released", 2)))
    assert status["status"] == "finished"
    assert status["text"] == "no active timers: every rank released its last one"


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("killed", "the latest timer of rank 2 was killed; no new timer has replaced it"),
        ("expired", "the latest timer of rank 2 expired; no new timer has replaced it"),
    ],
)
def test_a_rank_whose_latest_timer_ran_out_makes_the_job_hung(state: str, words: str) -> None:
    # Hung even while the other ranks' timers are active: they wait for rank 2.
    status = job_status(job(rank(0, "active", 1), rank(1, "active", 2), rank(2, state, 3)))
    assert status == {"status": "hung", "text": words}


def test_a_hung_job_that_stopped_stays_hung() -> None:
    status = job_status(job(rank(0, "released", 1), rank(1, "killed", 2), rank(2, "expired", 3)))
    assert status["status"] == "hung"
    assert status["text"] == (
        "the latest timers of ranks 1, 2 ran out (expired, killed); "
        "no new timers have replaced them"
    )


def test_ranks_read_as_ranks_never_as_a_count() -> None:
    assert ranks_text([2]) == "rank 2"
    assert ranks_text([2, 3]) == "ranks 2, 3"
    assert ranks_text([None]) == "rank ?"
    assert ranks_text(list(range(10))) == "ranks 0, 1, 2, 3, 4, 5, 6, 7 and 2 more"


def test_the_grid_marks_the_newest_incidents_suspects_while_the_job_is_hung() -> None:
    hung = job(rank(0, "active", 1), rank(1, "killed", 2))
    newest, older = incident([1], [1, 2]), incident([0], [7])
    assert suspects_marked(hung, "hung", [newest, older]) == [1]
    assert suspects_marked(hung, "hung", []) == []


def test_the_grid_marks_suspects_while_a_captured_timer_is_still_shown() -> None:
    # Rank 1 expired observe-only and was released since: the grid still shows the hang.
    shown = job(rank(0, "active", 1), rank(1, "released", 2))
    assert suspects_marked(shown, "running", [incident([0], [1, 2])]) == [0]


def test_after_a_restart_the_old_suspects_are_not_marked() -> None:
    # Every rank runs a new timer (11, 12): the incident captured 1 and 2.
    restarted = job(rank(0, "active", 11), rank(1, "active", 12))
    assert suspects_marked(restarted, "running", [incident([1], [1, 2])]) == []
