"""The FIFO line parser and the FIFO source's handling of garbage."""

from __future__ import annotations

import json
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timer_core import ManualClock, ProcessIdentity, Reaper
from timer_core.engine.admission import MAX_DEADLINE_SECONDS
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.process import ProcessSignaller
from timer_core.engine.request_text import scope_id_problem
from timer_core.sources.fifo_source import FifoSource
from timer_core.wire import MAX_LINE_BYTES, MalformedRequest, encode, parse_line


def line(**fields: object) -> bytes:
    payload = {"version": 1, "pid": 100, "scope_id": "s", "expiration_time": 5.0, "signal": 9}
    payload.update(fields)
    return json.dumps(payload).encode()


def test_parses_torchs_line() -> None:
    assert parse_line(line()) == ArmRequest(100, "s", 5.0, 9)
    assert parse_line(line(expiration_time=-1)).is_release


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (line(pid="100"), "'pid' must be int"),
        (line(pid=True), "'pid' must be int"),
        (line(pid=1.5), "'pid' must be int"),
        (line(scope_id=7), "'scope_id' must be str"),
        (line(expiration_time="soon"), "'expiration_time' must be"),
        (line(signal=None), "'signal' must be int"),
        (line(version=2), "unsupported version"),
        (b'{"version": 1, "pid": 100, "scope_id": "s", "signal": 9}', "missing field"),
        (b'{"version":1,"pid":100,"scope_id":"s","expiration_time":NaN,"signal":9}', "finite"),
        (b"[" * 100_000, "exceeds PIPE_BUF"),
        (b"[" * 4000 + b"]" * 4000, "exceeds PIPE_BUF"),
    ],
)
def test_rejects_bad_lines_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedRequest, match=why):
        parse_line(raw)


def test_deeply_nested_json_within_pipe_buf_is_rejected_not_crashing() -> None:
    with pytest.raises(MalformedRequest):
        parse_line(b"[" * 2000 + b"]" * 2000)


def test_encode_round_trips() -> None:
    request = ArmRequest(123, "train.py#42", 1.7e9, 15)
    assert parse_line(encode(request).strip()) == request


class _Collector:
    """A FifoSource over a real FIFO, applying to a reaper with a fake process table."""

    def __init__(self, path: str) -> None:
        self.processes = {pid: ProcessIdentity(pid, float(pid)) for pid in range(100, 200)}
        self.reaper = Reaper(
            clock=ManualClock(),
            signaller=ProcessSignaller(protected=frozenset({5})),
            watch_exits=False,
            identify_process=self.processes.get,
        )
        self.source = FifoSource(path, self.reaper)

    def close(self) -> None:
        self.source.stop()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[_Collector]:
    made = _Collector(str(tmp_path / "timers.fifo"))
    yield made
    made.close()


def test_garbage_between_good_lines_loses_none_of_them(collector: _Collector) -> None:
    chunk = b"\n".join(
        [line(pid=100), b"\xff garbage", line(pid="x"), line(pid=101), b"{", line(pid=102)]
    )
    collector.source.feed(chunk + b"\n")
    assert {timer.pid for timer in collector.reaper.active()} == {100, 101, 102}
    assert collector.source.malformed_lines == 3


def test_lines_split_across_reads_are_joined(collector: _Collector) -> None:
    whole = line(pid=150) + b"\n"
    collector.source.feed(whole[:10])
    assert collector.reaper.active() == []
    collector.source.feed(whole[10:])
    assert [timer.pid for timer in collector.reaper.active()] == [150]


def test_an_endless_line_is_dropped_without_unbounded_buffering(collector: _Collector) -> None:
    for _ in range(10):
        collector.source.feed(b"x" * 1000)
    collector.source.feed(b"tail of the long line\n" + line(pid=120) + b"\n")
    assert [timer.pid for timer in collector.reaper.active()] == [120]
    assert collector.source.malformed_lines == 1


def test_reads_what_a_client_wrote_to_the_real_fifo(collector: _Collector) -> None:
    with open(collector.source.path, "wb") as fifo:
        fifo.write(line(pid=130) + b"\n" + line(pid=130, expiration_time=-1) + b"\n")
    collector.source.drain()
    assert collector.reaper.active() == []
    assert collector.source.applied_requests == 2


good_requests = st.builds(
    ArmRequest,
    pid=st.integers(100, 199),
    # Every scope id the engine's rule allows (request_text): 1+ characters, none Cc or Cs.
    scope_id=st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40),
    expiration_time=st.floats(0, ManualClock().time() + MAX_DEADLINE_SECONDS),
    signal=st.sampled_from([0, 9, 15]),
)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(
        st.one_of(good_requests, st.binary(max_size=200).filter(lambda b: b"\n" not in b)),
        max_size=30,
    ),
    cut=st.integers(1, 64),
)
def test_random_bytes_never_crash_and_every_valid_request_applies(
    tmp_path_factory: pytest.TempPathFactory, items: list[ArmRequest | bytes], cut: int
) -> None:
    collector = _Collector(str(tmp_path_factory.mktemp("fifo") / "t.fifo"))
    try:
        stream = b"".join(
            encode(item) if isinstance(item, ArmRequest) else item + b"\n" for item in items
        )
        for start in range(0, len(stream), cut):
            collector.source.feed(stream[start : start + cut])
        expected: dict[tuple[int, str], float] = {}
        for item in items:
            if isinstance(item, ArmRequest):
                expected[(item.pid, item.scope_id)] = item.expiration_time
            else:
                try:
                    parsed = parse_line(item.strip())
                except MalformedRequest:
                    continue
                within_cap = parsed.expiration_time <= ManualClock().time() + MAX_DEADLINE_SECONDS
                allowed = scope_id_problem(parsed.scope_id) is None
                if item.strip() and parsed.pid in collector.processes and within_cap and allowed:
                    expected[(parsed.pid, parsed.scope_id)] = parsed.expiration_time
        active = {(t.pid, t.scope_id): t.expiration_time for t in collector.reaper.active()}
        assert active == expected
    finally:
        collector.close()


def test_a_line_of_pipe_buf_bytes_is_read_and_one_byte_more_is_not() -> None:
    # Up to PIPE_BUF bytes, a write reaches the FIFO whole, never mixed with another's.
    assert MAX_LINE_BYTES == select.PIPE_BUF
    fitting = line() + b" " * (MAX_LINE_BYTES - len(line()))
    assert parse_line(fitting) == ArmRequest(100, "s", 5.0, 9)
    with pytest.raises(MalformedRequest, match="exceeds PIPE_BUF"):
        parse_line(fitting + b" ")
