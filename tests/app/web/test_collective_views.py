"""The incident page's collectives (``collective_views``), from an incident as the API
dumps it: each rank's recorded flight recorder (the real dumps of hung torchrun jobs in
``tests/timer_core/diagnosis/collectives``) and the analysis's findings and rules; and
the page rendered from it, a worker's hostile op name shown as text."""

from __future__ import annotations

from typing import Any

import pytest

from app.web.collective_views import SEQS_SHOWN, collective_view, suspect_rules
from app.web.page_templates import templates
from tests.timer_core.diagnosis.recorded import recorders
from timer_core.diagnosis import RankCapture, analyse

HOSTILE_OP = '<script>alert(1)</script><img src=x onerror="window.__pwned=1">'


def incident(scenario: str, keep: int = 8) -> dict[str, Any]:
    """The incident's JSON as the API would answer it: each rank's collectives, the
    findings and the rules of the analysis over the same recorders."""
    read = recorders(scenario)
    analysis = analyse(
        [RankCapture(r.rank, 100 + r.rank, "n", None, "killed", 1.0, None, r) for r in read]
    )
    return {
        "ranks": [{"rank": r.rank, "collectives": r.collectives_json(keep)} for r in read],
        "collective_findings": [f.as_json() for f in analysis.collective_findings],
        "suspect_rules": [list(rule) for rule in analysis.suspect_rules],
        "suspects": list(analysis.suspects),
    }


def missing_cells(view: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [
        (table["pg"], row["rank"], cell["seq"])
        for table in view["tables"]
        for row in table["rows"]
        for cell in row["cells"]
        if cell["missing"]
    ]


def test_the_rank_that_skipped_is_marked_missing_in_its_groups_table() -> None:
    view = collective_view(incident("skip"), hidden=False)
    assert view["findings"] == [
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2 wait in it"
    ]
    (table,) = view["tables"]
    assert (table["pg"], table["name"], table["seqs"]) == ("0", "default group", [1, 2, 3, 4])
    assert missing_cells(view) == [("0", 1, 4)]
    rows = {row["rank"]: row for row in table["rows"]}
    assert (rows[1]["last_enqueued"], rows[1]["last_completed"]) == (3, 3)
    entered = rows[0]["cells"][3]
    assert (entered["op"], entered["shape"], entered["state"]) == (
        "all_reduce",
        "[8] float32",
        "scheduled",
    )


def test_a_subgroups_table_is_its_own_and_named() -> None:
    view = collective_view(incident("subgroup"), hidden=False)
    assert [(t["pg"], t["name"]) for t in view["tables"]] == [
        ("0", "default group"),
        ("1", "group 1"),
    ]
    assert missing_cells(view) == [("0", 1, 4)]
    assert view["findings"][1].endswith("its peers unknown")


def test_a_table_shows_the_newest_sequence_numbers_and_every_one_a_finding_names() -> None:
    stored = incident("skip")
    # Ranks 0 and 2 recorded far more collectives than the table has room for.
    for rank in stored["ranks"]:
        (group,) = rank["collectives"]
        if rank["rank"] != 1:
            group["entries"] += [dict(group["entries"][-1], seq=seq) for seq in range(5, 20)]
    (table,) = collective_view(stored, hidden=False)["tables"]
    assert len(table["seqs"]) == SEQS_SHOWN
    assert table["seqs"] == [4, 15, 16, 17, 18, 19]
    # Rank 1's record of #3 is out of view; past what it entered, it never got there.
    rank1 = next(row for row in table["rows"] if row["rank"] == 1)
    assert [cell["state"] for cell in rank1["cells"]][1:] == ["not entered"] * 5


def test_hidden_from_the_reader_ops_and_words_go_who_missed_what_stays() -> None:
    view = collective_view(incident("dtype"), hidden=True)
    assert view["findings"] == [] and view["findings_hidden"]
    cells = [cell for table in view["tables"] for row in table["rows"] for cell in row["cells"]]
    assert cells and all(cell.get("op", "") == "" and cell.get("shape", "") == "" for cell in cells)
    assert any(cell.get("state") == "scheduled" for cell in cells)


def test_a_missing_rank_with_no_record_of_the_group_still_gets_its_row() -> None:
    stored = incident("skip")
    stored["ranks"][1]["collectives"] = None  # no recorder stored for rank 1
    (table,) = collective_view(stored, hidden=False)["tables"]
    rank1 = next(row for row in table["rows"] if row["rank"] == 1)
    assert not rank1["recorded"] and [c["missing"] for c in rank1["cells"]][-1]


@pytest.mark.parametrize(
    "garbage",
    [
        {"ranks": "x", "collective_findings": {"pg": "0"}},
        {"ranks": [None, {"rank": True, "collectives": []}, {"rank": 0, "collectives": [1, {}]}]},
        {"ranks": [{"rank": 0, "collectives": [{"pg": "0", "entries": [{"seq": "1"}, 7]}]}]},
        {"collective_findings": [{"pg": "0", "seq": 1}, None, "text"]},
        {},
    ],
)
def test_what_is_not_of_the_stored_shape_is_left_out(garbage: dict[str, Any]) -> None:
    view = collective_view(garbage, hidden=False)
    assert view["findings"] == []
    assert all(not row["cells"] for table in view["tables"] for row in table["rows"])


@pytest.mark.parametrize(
    "stored",
    [
        [[1, "collective"], [3, "stack"], [None, "stack"]],
        [
            {"rank": 1, "rule": "collective"},
            {"rank": 3, "rule": "stack"},
            {"rank": None, "rule": "stack"},
        ],
        {"1": "collective", "3": "stack", "null": "stack"},
    ],
)
def test_suspect_rules_read_as_pairs_objects_or_a_map(stored: object) -> None:
    assert suspect_rules({"suspect_rules": stored}) == {1: "collective", 3: "stack", None: "stack"}


def test_suspect_rules_of_any_other_shape_name_nobody() -> None:
    for stored in (None, "collective", [[1]], [["1", "stack"]], [[True, "stack"]], [[1, 2]]):
        assert suspect_rules({"suspect_rules": stored}) == {}


def test_the_page_shows_a_hostile_op_name_as_text() -> None:
    stored = incident("skip")
    for rank in stored["ranks"]:
        for entry in rank["collectives"][0]["entries"]:
            entry["op"] = HOSTILE_OP
    stored["collective_findings"][0]["op"] = HOSTILE_OP
    stored["collective_findings"][0]["desc"] = HOSTILE_OP
    view = {
        "incident": stored | {"id": 1, "job_id": "j", "opened_at": 1.0, "nodes": [], "summary": ""},
        "frames_hidden": False,
        "groups": [],
        "rules": [(1, "collective")],
        "collectives": collective_view(stored, hidden=False),
    }
    html = templates.env.get_template("incident.html").render(
        view=view, incident_id=1, root="", page="incident", now=None
    )
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count('data-missing="true"') == 1
    assert 'data-rank="1" data-missing="true"' in html
    assert 'data-rule="collective"' in html
