"""A fake shell for the session machine: performs its effects on fake children, in memory.

It plays the I/O shell's part of the contract: a ``Kill`` is followed at once by
``child_killed``; every other effect is recorded. Fake children remember the cell each one
runs (the last ``Exec`` without a ``Done``) so tests can produce output and replies as a
real child would, and the invariants of ``machine.py`` are checked on every effect.
"""

from __future__ import annotations

from typing import Any

from cellbox.protocol import channel as ch
from cellbox.protocol.messages import Display, ErrorInfo
from cellbox.supervisor import machine as mc


class FakeChild:
    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.sent: list[ch.Msg] = []
        self.wakes = 0
        self.killed: str | None = None
        self.cell: int | None = None  # the cell it runs (an Exec without a Done)
        self.interrupts: list[int] = []

    @property
    def execs(self) -> list[ch.Exec]:
        return [m for m in self.sent if isinstance(m, ch.Exec)]


class Driver:
    def __init__(self, config: mc.Config | None = None, now: float = 0.0) -> None:
        self.m = mc.SessionMachine(config or mc.Config(timeout=None, grace=2.0))
        self.now = now
        self.children: dict[int, FakeChild] = {}
        self.answers: dict[Any, mc.Answer] = {}
        self.order: list[Any] = []  # keys in the order they were answered
        self.outputs: list[mc.Output] = []
        self.shows: list[mc.Show] = []
        self.asks: list[mc.AskInput] = []
        self.evals: dict[Any, mc.Eval] = {}
        self.ran_on: dict[Any, int] = {}  # eval key -> the generation its Exec went to
        self.effects: list[mc.Effect] = []
        self.start_gen = self.m.start()
        self.pump()

    # -- effects -----------------------------------------------------------------------------

    def pump(self) -> None:
        while True:
            effects = self.m.take()
            if not effects:
                return
            for effect in effects:
                self.effects.append(effect)
                self._perform(effect)

    def _perform(self, effect: mc.Effect) -> None:
        match effect:
            case mc.Spawn(gen=gen):
                assert gen not in self.children, "a generation is spawned once"
                self.children[gen] = FakeChild(gen)
            case mc.Send(gen=gen, msg=msg):
                child = self.children[gen]
                assert child.killed is None, "nothing is sent to a killed child"
                child.sent.append(msg)
                if isinstance(msg, ch.Exec):
                    assert child.cell is None, "one cell at a time per child"
                    child.cell = msg.id
                    for key, ev in self.evals.items():
                        if ev.cell_id == msg.id and ev.state is mc.EvalState.SENT:
                            self.ran_on[key] = gen
                elif isinstance(msg, ch.Interrupt):
                    child.interrupts.append(msg.id)
            case mc.Wake(gen=gen):
                child = self.children[gen]
                assert child.interrupts, "a wake-up follows an Interrupt"
                child.wakes += 1
            case mc.Kill(gen=gen, reason=reason):
                child = self.children[gen]
                if child.killed is None:
                    child.killed = reason
                self.m.child_killed(gen, self.now)
            case mc.Output():
                self.outputs.append(effect)
            case mc.Show():
                self.shows.append(effect)
            case mc.AskInput():
                self.asks.append(effect)
            case mc.Answer(ev=ev):
                assert ev.key not in self.answers, f"eval {ev.key!r} answered twice"
                self.answers[ev.key] = effect
                self.order.append(ev.key)

    # -- requests ----------------------------------------------------------------------------

    def submit(self, key: Any, code: str = "1+1", **kw: Any) -> mc.Eval:
        ev = mc.Eval(key=key, request_id=key, code=code, **kw)
        self.evals[key] = ev
        self.m.submit(ev, self.now)
        self.pump()
        return ev

    def interrupt(self, key: Any = None) -> bool:
        ev = self.evals[key] if key is not None else None
        hit = self.m.interrupt(ev, self.now)
        self.pump()
        return hit

    def close(self, cause: str = "closed") -> None:
        self.m.close(cause, self.now)
        self.pump()

    def restart(self) -> int:
        gen = self.m.restart(self.now)
        self.pump()
        return gen

    def advance(self, dt: float) -> None:
        self.now += dt
        if self.now >= self.m.deadline:
            self.m.tick(self.now)
            self.pump()

    # -- the fake children -------------------------------------------------------------------

    @property
    def gen(self) -> int:
        """The newest child generation."""
        return max(self.children)

    def ready(self, gen: int | None = None, pid: int = 100) -> None:
        gen = self.gen if gen is None else gen
        self.m.child_ready(gen, pid + gen, "3.11.7", self.now)
        self.pump()

    def start_failed(self, gen: int | None = None, message: str = "boom") -> None:
        self.m.child_start_failed(self.gen if gen is None else gen, message, self.now)
        self.pump()

    def done(self, gen: int | None = None, *, cell: int | None = None, error: bool = False,
             stopped: str | None = None, fatal: str | None = None, count: int | None = None) -> None:
        gen = self.gen if gen is None else gen
        child = self.children[gen]
        cell = child.cell if cell is None else cell
        assert cell is not None
        if child.cell == cell:
            child.cell = None
        err = ErrorInfo(type="KeyboardInterrupt", message="", traceback="") if error else None
        execs = [e for e in child.execs if e.id == cell]
        n = execs[0].execution_count if execs else (count or 0)
        self.m.child_message(gen, ch.Done(id=cell, execution_count=n, error=err, stopped=stopped, fatal=fatal), self.now)
        self.pump()

    def output(self, data: bytes, gen: int | None = None, stream: str = "stdout") -> None:
        self.m.child_output(self.gen if gen is None else gen, stream, data, self.now)
        self.pump()

    def display(self, gen: int | None = None, cell: int | None = None, size: int = 10) -> None:
        gen = self.gen if gen is None else gen
        cell = self.children[gen].cell if cell is None else cell
        self.m.child_message(gen, ch.DisplayEvent(id=cell, display=Display(data={"text/plain": "x" * size})), self.now)
        self.pump()

    def exited(self, status: int, gen: int | None = None) -> None:
        gen = self.gen if gen is None else gen
        self.children[gen].cell = None
        self.m.child_exited(gen, status, self.now)
        self.pump()

    def channel_closed(self, corrupt: bool = False, gen: int | None = None) -> None:
        self.m.channel_closed(self.gen if gen is None else gen, corrupt, self.now)
        self.pump()

    def result(self, key: Any):
        return self.answers[key].result
