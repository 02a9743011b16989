"""A flight recorder comes from a worker, maybe another user's process: any shape, huge
lists, wrong types. Reading it never raises, keeps everything bounded, and says what it
left out; the analysis of what remains still runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from timer_core.diagnosis import flight_recorder
from timer_core.diagnosis.collectives import analyse_collectives
from timer_core.diagnosis.flight_recorder import (
    MAX_DUMP_BYTES,
    load_flight_recorder,
    read_flight_recorder,
)

DUMPS = Path(__file__).with_name("collectives")


def real_dump(rank: int = 0) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DUMPS / "skip" / f"rank{rank}.json").read_text())
    return loaded


def entry(seq: int, **changes: Any) -> dict[str, Any]:
    return {**real_dump()["entries"][0], "collective_seq_id": seq, **changes}


@pytest.mark.parametrize(
    "dump",
    [
        None,
        7,
        "text",
        [],
        [1, 2],
        {"entries": "x"},
        {"entries": {"a": 1}},
        {"pg_status": []},
        {"pg_config": 3},
        {"entries": [None, 1, "x", [], {}]},
        {"entries": [{"process_group": "0", "collective_seq_id": 1}]},
        {"entries": [{"process_group": ["0", "d"], "collective_seq_id": "x"}]},
        {"entries": [{"process_group": ["0", "d"], "collective_seq_id": True}]},
        {"pg_status": {"0": "x"}},
        {"pg_status": {"0": {"last_enqueued_collective": [1]}}},
        {"pg_config": {"": {"ranks": 5}}, "entries": [entry(1, input_sizes="x", input_dtypes=3)]},
    ],
)
def test_any_shape_is_read_without_raising(dump: object) -> None:
    recorder = read_flight_recorder(0, dump)
    json.dumps(recorder.collectives_json())
    result = analyse_collectives([recorder, read_flight_recorder(1, real_dump(1))])
    json.dumps(result.findings_json())
    assert dict(result.dropped).get(0, ()) == recorder.dropped


def test_what_is_not_an_object_or_a_list_is_named_in_dropped() -> None:
    assert read_flight_recorder(0, [1]).dropped == ("dump is a list, not an object",)
    notes = read_flight_recorder(0, {"entries": "x", "pg_status": 1}).dropped
    assert notes == ("entries is a str, not a list", "pg_status is a int, not an object")
    notes = read_flight_recorder(0, {"entries": [entry(1), None]}).dropped
    assert notes == ("entry 1 unreadable",)


def test_entries_are_bounded_oldest_first_out_and_notes_too() -> None:
    many = [entry(seq) for seq in range(1, flight_recorder.MAX_ENTRIES + 501)] + [None] * 20
    recorder = read_flight_recorder(0, {"entries": many})
    (group,) = recorder.groups
    assert len(group.entries) == flight_recorder.MAX_ENTRIES - 20
    assert group.entries[-1].seq == flight_recorder.MAX_ENTRIES + 500
    assert recorder.dropped[0] == f"520 oldest entries over {flight_recorder.MAX_ENTRIES}"
    assert len(recorder.dropped) == flight_recorder.MAX_NOTES + 1
    assert recorder.dropped[-1] == f"and {21 - flight_recorder.MAX_NOTES} more"


def test_sizes_strings_and_groups_are_bounded() -> None:
    huge = entry(
        1,
        profiling_name="gloo:" + "x" * 10_000,
        input_sizes=[[1] * 1000] * 1000,
        input_dtypes=["Float"] * 1000,
        state="s" * 10_000,
        process_group=["0", "d" * 10_000],
    )
    others = [entry(1, process_group=[str(pg), "d"]) for pg in range(1, 200)]
    recorder = read_flight_recorder(0, {"entries": [huge, *others]})
    first = recorder.groups[0].entries[0]
    assert len(first.op) <= flight_recorder.MAX_TEXT
    assert len(first.state) <= flight_recorder.MAX_TEXT
    assert len(first.sizes) == flight_recorder.MAX_TENSORS
    assert all(len(size) == flight_recorder.MAX_DIMS for size in first.sizes)
    assert len(first.dtypes) == flight_recorder.MAX_TENSORS
    assert len(recorder.groups) == flight_recorder.MAX_GROUPS
    assert any(f"over {flight_recorder.MAX_GROUPS}" in note for note in recorder.dropped)


def test_raw_bytes_over_the_limit_or_not_json_are_refused_with_a_reason() -> None:
    assert load_flight_recorder(0, b"x" * (MAX_DUMP_BYTES + 1)).dropped == (
        f"dump of {MAX_DUMP_BYTES + 1} bytes over {MAX_DUMP_BYTES}",
    )
    assert load_flight_recorder(0, b"{nope").dropped[0].startswith("not JSON: ")
    assert (
        load_flight_recorder(0, b"[" * 100_000 + b"]" * 100_000).dropped[0].startswith("not JSON: ")
    )
    raw = (DUMPS / "skip" / "rank0.json").read_bytes()
    assert load_flight_recorder(0, raw) == read_flight_recorder(0, real_dump())


def test_glous_default_group_key_is_read_as_group_0_only_when_it_lists_ranks() -> None:
    assert read_flight_recorder(0, real_dump()).members == {"0": frozenset({0, 1, 2})}
    dump = {**real_dump(), "pg_config": {"": {"desc": "", "name": "", "ranks": "[]"}}}
    assert read_flight_recorder(0, dump).members == {}
    dump = {**real_dump(), "pg_config": {"": {"ranks": "[0, x, 99999999, -1, 2]"}}}
    assert read_flight_recorder(0, dump).members == {"0": frozenset({0, 2})}


def test_a_lying_rank_cannot_make_another_missing_from_a_group_it_is_not_in() -> None:
    # Rank 1 claims a group of ranks 0 and 2 in which it ran collective 5: those ranks'
    # own dumps never mention that group, so the claim names only rank 1 itself.
    liar = {
        **real_dump(1),
        "pg_config": {"9": {"ranks": "[0, 2]"}},
        "entries": [entry(5, process_group=["9", "x"])],
    }
    result = analyse_collectives(
        [
            read_flight_recorder(0, real_dump(0)),
            read_flight_recorder(1, liar),
            read_flight_recorder(2, real_dump(2)),
        ]
    )
    assert all(finding.pg != "9" or not finding.missing for finding in result.findings)


def test_full_recorders_of_many_ranks_are_analysed_at_once() -> None:
    # Every rank's buffer full, each disagreeing with the others only at the very end:
    # the analysis reads each entry a bounded number of times, never once per other entry.
    def full(rank: int) -> dict[str, Any]:
        count = flight_recorder.MAX_ENTRIES
        entries = [entry(seq) for seq in range(1, count)] + [entry(count, input_sizes=[[rank]])]
        return {"entries": entries}

    result = analyse_collectives([read_flight_recorder(r, full(r)) for r in range(8)])
    (finding,) = result.findings
    assert (finding.seq, finding.mismatch and finding.mismatch[0]) == (
        flight_recorder.MAX_ENTRIES,
        "sizes",
    )
