"""What an incident stores of a rank's flight recorder (``RankRecorder.stored_json``)
reads back as the same recorder (``stored_recorder``), through JSON as a database
holds it, and gives the same analysis; a stored row of any shape (another node of the
fleet wrote it) is read without raising, bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from timer_core.diagnosis.collectives import analyse_collectives
from timer_core.diagnosis.flight_recorder import (
    MAX_ENTRIES,
    STORED_ENTRIES,
    RankRecorder,
    load_flight_recorder,
    read_flight_recorder,
    stored_recorder,
)

DUMPS = Path(__file__).with_name("collectives")
CASES = sorted(case.name for case in DUMPS.iterdir() if case.is_dir())


def recorders(case: str) -> list[RankRecorder]:
    return [
        load_flight_recorder(int(dump.stem.removeprefix("rank")), dump.read_bytes())
        for dump in sorted((DUMPS / case).glob("rank*.json"))
    ]


def through_json(recorder: RankRecorder, keep: int = STORED_ENTRIES) -> RankRecorder:
    return stored_recorder(recorder.rank, json.loads(json.dumps(recorder.stored_json(keep))))


@pytest.mark.parametrize("case", CASES)
def test_a_stored_recorder_reads_back_as_itself_and_analyses_alike(case: str) -> None:
    loaded = recorders(case)
    stored = [through_json(recorder) for recorder in loaded]
    assert stored == loaded
    assert analyse_collectives(stored) == analyse_collectives(loaded)


def test_only_the_last_entries_of_each_group_are_stored() -> None:
    dump = json.loads((DUMPS / "skip" / "rank0.json").read_text())
    template = dump["entries"][0]
    dump["entries"] = [{**template, "collective_seq_id": seq} for seq in range(1, 101)]
    recorder = read_flight_recorder(0, dump)
    (group,) = through_json(recorder).groups
    assert [entry.seq for entry in group.entries] == list(range(101 - STORED_ENTRIES, 101))
    assert group.desc == recorder.groups[0].desc != ""
    # The pg_status numbers and the members are kept whole.
    assert (group.last_enqueued, group.last_completed) == (
        recorder.groups[0].last_enqueued,
        recorder.groups[0].last_completed,
    )
    assert through_json(recorder).members == recorder.members


@pytest.mark.parametrize(
    "stored",
    [
        None,
        [],
        "x",
        {"groups": "x", "members": [], "dropped": 5},
        {"groups": [None, 1, {"pg": 0}, {"pg": "0", "entries": "x"}]},
        {"groups": [{"pg": "0", "entries": [None, {"seq": "x"}, {"seq": 1, "sizes": "x"}]}]},
        {"groups": [{"pg": "0", "entries": [{"seq": 1, "sizes": [["a", 2**70, 3]]}]}]},
        {"members": {"0": "x", "1": [1, -1, "2", None, True]}},
        {"groups": [{"pg": "p" * 10_000, "desc": ["x"], "last_enqueued": "7"}]},
        {"dropped": ["x" * 10_000] * 1000},
    ],
)
def test_a_stored_row_of_any_shape_is_read_without_raising(stored: Any) -> None:
    recorder = stored_recorder(3, stored)
    json.dumps(recorder.stored_json())
    json.dumps(recorder.collectives_json())
    analyse_collectives([recorder, *recorders("skip")])
    assert all(len(group.pg) <= 64 for group in recorder.groups)
    assert len(recorder.dropped) <= 9 and all(len(note) <= 64 for note in recorder.dropped)


def test_a_huge_stored_group_is_bounded() -> None:
    entries = [{"seq": seq, "op": "all_reduce"} for seq in range(3 * MAX_ENTRIES)]
    recorder = stored_recorder(0, {"groups": [{"pg": "0", "entries": entries}] * 500})
    assert len(recorder.groups) == 64
    assert len(recorder.groups[0].entries) == MAX_ENTRIES
    assert recorder.groups[0].entries[-1].seq == 3 * MAX_ENTRIES - 1
