"""Random interleavings of every session event, with the machine's invariants after each step.

The model beside the machine knows which child generation holds the namespace the client
has (``known``); output the fake children write is tagged with the generation and cell that
wrote it, so attribution can be checked byte for byte.
"""

from __future__ import annotations

import re
import signal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cellbox.supervisor import machine as mc
from tests.unit.machine_driver import Driver

TAG = re.compile(r"<(\d+)\.(\d+)>")
LIMIT = 4096
GRACE = 1.0


class SessionInterleavings(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.d = Driver(mc.Config(timeout=5.0, grace=GRACE, output_bytes=LIMIT))
        self.keys = 0
        self.known: int | None = self.d.start_gen  # the generation whose namespace the client has
        self.checked: set = set()
        self.idle_bytes: dict[tuple[str, int], int] = {}

    # -- requests ------------------------------------------------------------------------------

    @rule(timeout=st.sampled_from([None, 0, 1.0, 3.0]), silent=st.booleans())
    def submit(self, timeout, silent) -> None:
        self.keys += 1
        self.d.submit(self.keys, timeout=timeout, silent=silent)

    @rule(pick=st.integers(0, 10))
    def interrupt(self, pick) -> None:
        pending = [k for k in self.d.evals if k not in self.d.answers]
        key = pending[pick % len(pending)] if pending and pick else None
        self.d.interrupt(key)

    @rule()
    def close(self) -> None:
        self.d.close()

    @rule()
    def restart(self) -> None:
        if self.d.m.closed is None:
            self.d.restart()
            self.checked |= set(self.d.answers)  # restart answers need no namespace check
            self.known = self.d.gen

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.5, 7.0]))
    def time_passes(self, dt) -> None:
        self.d.advance(dt)

    # -- the child -------------------------------------------------------------------------------

    @rule(pick=st.integers(0, 3))
    def ready(self, pick) -> None:
        gen = max(1, self.d.gen - pick)
        if self.d.children[gen].killed is None:
            self.d.ready(gen)

    @rule()
    def start_failed(self) -> None:
        child = self.d.m.child
        if child is not None and child.gen == self.known and child.state is mc.ChildState.STARTING:
            self.known = None  # a namespace that never existed: the next one is as empty
        self.d.start_failed()

    @rule(pick=st.integers(0, 2), n=st.integers(1, 3000), stream=st.sampled_from(["stdout", "stderr"]))
    def output(self, pick, n, stream) -> None:
        gen = max(1, self.d.gen - pick)
        child = self.d.children[gen]
        tag = f"<{gen}.{child.cell or 0}>".encode()
        self.d.output((tag * (n // len(tag) + 1))[: max(n, len(tag))], gen=gen, stream=stream)

    @rule(pick=st.integers(0, 2))
    def display(self, pick) -> None:
        gen = max(1, self.d.gen - pick)
        if self.d.children[gen].cell is not None:
            self.d.display(gen=gen, size=500)

    @rule(pick=st.integers(0, 2), stopped=st.sampled_from([None, "interrupt", "timeout"]), fatal=st.booleans())
    def done(self, pick, stopped, fatal) -> None:
        gen = max(1, self.d.gen - pick)
        if self.d.children[gen].cell is not None:
            self.d.done(gen=gen, error=stopped is not None, stopped=stopped, fatal="memory" if fatal else None)

    @rule(pick=st.integers(0, 2), cell=st.integers(1, 30))
    def stale_done(self, pick, cell) -> None:
        gen = max(1, self.d.gen - pick)
        if self.d.children[gen].cell != cell:
            self.d.done(gen=gen, cell=cell)

    @rule(pick=st.integers(0, 2), how=st.sampled_from([signal.SIGSEGV, signal.SIGKILL, 3 << 8]))
    def exits(self, pick, how) -> None:
        gen = max(1, self.d.gen - pick)
        self.d.exited(how, gen=gen)

    @rule(corrupt=st.booleans())
    def channel_closed(self, corrupt) -> None:
        self.d.channel_closed(corrupt)

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def answered_once_and_only_when_done(self) -> None:
        for key, ev in self.d.evals.items():
            assert (key in self.d.answers) == (ev.state is mc.EvalState.DONE)

    @invariant()
    def one_eval_past_queued(self) -> None:
        m = self.d.m
        active = [e for e in self.d.evals.values() if e.state not in (mc.EvalState.QUEUED, mc.EvalState.DONE)]
        assert active == ([m.running] if m.running is not None else [])
        assert all(e.state is mc.EvalState.QUEUED for e in m.queue)
        if m.running is not None and m.running.state is mc.EvalState.SENT:
            assert m.child is not None and m.child.state is mc.ChildState.LIVE

    @invariant()
    def closed_answers_everything(self) -> None:
        if self.d.m.closed is not None:
            assert set(self.d.answers) == set(self.d.evals)

    @invariant()
    def state_lost_iff_the_namespace_is_gone(self) -> None:
        for key in self.d.order:
            if key in self.checked:
                continue
            self.checked.add(key)
            r = self.d.result(key)
            if r.status == "killed":
                assert r.state_lost, (key, r)
                self.known = None  # the client knows: the next namespace is a fresh one
            elif r.execution_count is None:  # dropped before it ran (an interrupt)
                if r.state_lost:
                    self.known = None
            else:
                gen = self.d.ran_on[key]
                assert r.state_lost == (self.known is not None and self.known != gen), (key, r, self.known, gen)
                self.known = gen

    @invariant()
    def output_is_attributed_to_its_own_eval(self) -> None:
        for out in self.d.outputs:
            for gen, cell in TAG.findall(out.text):
                gen, cell = int(gen), int(cell)
                if out.ev is not None:
                    assert (gen, cell) == (self.d.ran_on[out.ev.key], out.ev.cell_id), (out, gen, cell)
        for show in self.d.shows:
            if show.ev is not None:
                assert show.ev.state is not mc.EvalState.QUEUED

    @invariant()
    def output_is_bounded_by_the_caps(self) -> None:
        per_eval: dict[tuple, int] = {}
        for out in self.d.outputs:
            if out.ev is not None and "[cellbox:" not in out.text:
                k = (out.ev.key, out.stream)
                per_eval[k] = per_eval.get(k, 0) + len(out.text.encode())
        assert all(n <= LIMIT for n in per_eval.values()), per_eval
        for key, ans in self.d.answers.items():
            r = ans.result
            if r.stdout is not None:
                kept = len(re.sub(r"\n\[cellbox: \d+ bytes of output dropped here\]\n", "", r.stdout).encode())
                assert kept <= LIMIT

    @invariant()
    def deadline_is_honest(self) -> None:
        m = self.d.m
        if m.running is not None and m.running.state is mc.EvalState.SENT and m.running.timeout_at < float("inf"):
            assert m.deadline <= m.running.timeout_at + GRACE


SessionInterleavings.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestSessionInterleavings = SessionInterleavings.TestCase
