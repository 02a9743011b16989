"""The engine under random sequences of requests, exits and time steps (hypothesis),
checked against a plain model: nothing is signalled early, late, twice or wrongly."""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.timer_core.world import SERVER_PID, World
from timer_core import RefusedError
from timer_core.engine.arm_request import ArmRequest

PIDS = st.sampled_from([100, 101, 102, 200])
SCOPES = st.sampled_from(["a", "b", "c"])
SIGNALS = st.sampled_from([0, 9, 15])
HOSTILE = st.sampled_from([0, 1, -1, -100, SERVER_PID, 10**12, 555])


class ReaperMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(escalate_after=None)
        # (pid, scope) -> (deadline, arming order, signal): the engine breaks deadline
        # ties by arming order, and so does the model.
        self.model: dict[tuple[int, str], tuple[float, int, int]] = {}
        self.armed = 0
        self.alive = set(self.world.processes)
        self.expected_signals: Counter[tuple[int, int]] = Counter()

    @rule(pid=PIDS, scope=SCOPES, after=st.floats(0, 10), signal=SIGNALS)
    def acquire(self, pid: int, scope: str, after: float, signal: int) -> None:
        expiration_time = self.world.at(after)
        try:
            self.world.reaper.acquire(ArmRequest(pid, scope, expiration_time, signal))
        except RefusedError:
            assert pid not in self.alive
            return
        assert pid in self.alive
        self.armed += 1
        # Deadlines travel as unix seconds (torch's format), whose resolution at today's
        # epoch is ~0.2 us: the model converts them exactly as the engine must.
        clock = self.world.clock
        deadline = clock.monotonic() + (expiration_time - clock.time())
        self.model[(pid, scope)] = (deadline, self.armed, signal)

    @rule(pid=HOSTILE, after=st.floats(-5, 5))
    def hostile_acquire(self, pid: int, after: float) -> None:
        try:
            self.world.reaper.acquire(ArmRequest(pid, "x", self.world.at(after)))
        except RefusedError:
            return
        raise AssertionError(f"pid {pid} was armed")

    @rule(pid=PIDS, scope=SCOPES)
    def release(self, pid: int, scope: str) -> None:
        released = self.world.reaper.release(pid, scope)
        assert (released is not None) == ((pid, scope) in self.model)
        self.model.pop((pid, scope), None)

    @rule(pid=PIDS)
    def worker_exits(self, pid: int) -> None:
        identity = self.world.processes.pop(pid, None)
        self.alive.discard(pid)
        if identity is not None:
            self.world.reaper.worker_exited(identity)
        for key in [key for key in self.model if key[0] == pid]:
            del self.model[key]

    @rule(seconds=st.floats(0, 4))
    def time_passes(self, seconds: float) -> None:
        self.world.clock.advance(seconds)
        now = self.world.clock.monotonic()
        due = {key: value for key, value in self.model.items() if value[0] <= now}
        signalled_pids: set[int] = set()
        for (pid, scope), (_, _, signal) in sorted(due.items(), key=lambda item: item[1][:2]):
            if signal > 0 and pid not in signalled_pids:
                signalled_pids.add(pid)
                self.expected_signals[(pid, signal)] += 1
            del self.model[(pid, scope)]
        self.world.reaper.step()

    @invariant()
    def signals_match_the_model(self) -> None:
        assert Counter(self.world.signaller.sent) == self.expected_signals

    @invariant()
    def active_timers_match_the_model(self) -> None:
        active = {(t.pid, t.scope_id) for t in self.world.reaper.active()}
        assert active == set(self.model)

    @invariant()
    def hostile_pids_are_never_signalled(self) -> None:
        assert all(pid in (100, 101, 102, 200) for pid, _ in self.world.signaller.sent)


ReaperMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_reaper_state_machine = ReaperMachine.TestCase
