"""The session's I/O shell (``supervisor/session.py``) over fake children on a real event
loop: it performs the machine's effects in order, arms the machine's deadline as a loop timer,
and delivers a killed child's last output before the kill's answer. No process is started."""

from __future__ import annotations

from typing import Any

import anyio

from cellbox.protocol import channel as ch
from cellbox.protocol.messages import Limits
from cellbox.supervisor import machine as mc
from cellbox.supervisor.session import Session, Settings
from cellbox.supervisor.stats import Stats


class FakeChild:
    """What the shell uses of a ``Child``; ``pipe`` is what its output pipes still hold."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.python = "3.x"
        self.status: int | None = None
        self.cpu_used = 0.0
        self.exited = anyio.Event()
        self.listener: Any = None
        self.sent: list[Any] = []
        self.pipe: list[bytes] = []
        self.killed = False
        self.wakes = 0
        self.woken_thrice = anyio.Event()

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    def wake(self) -> None:
        self.wakes += 1
        if self.wakes >= 3:
            self.woken_thrice.set()

    def kill(self) -> None:
        self.killed = True
        self.status = 9
        self.exited.set()

    def drain(self) -> None:
        data, self.pipe = self.pipe, []
        for chunk in data:
            self.listener.on_output("stdout", chunk)

    def rss(self) -> int | None:
        return None

    def done(self, cell: int, **kw: Any) -> None:
        self.listener.on_message(ch.Done(id=cell, execution_count=1, **kw))


class Starter:
    def __init__(self) -> None:
        self.children: list[FakeChild] = []

    async def start(self, configure: ch.Configure, env: Any, strict: Any = None) -> FakeChild:
        child = FakeChild(1000 + len(self.children))
        self.children.append(child)
        return child


class Outlet:
    def __init__(self) -> None:
        self.outputs: list[tuple[Any, str, str]] = []

    def output(self, session: str, request_id: Any, stream: str, text: str) -> None:
        self.outputs.append((request_id, stream, text))

    def display(self, session: str, request_id: Any, display: Any) -> None:
        pass

    def input_request(self, session: str, request_id: Any, prompt: str, password: bool, prompt_id: int) -> None:
        pass


def run(test: Any, grace: float) -> None:
    async def main() -> None:
        starter, outlet = Starter(), Outlet()
        settings = Settings(timeout=None, grace=grace, output_bytes=1 << 20, limits=Limits(),
                            detection=None, ast_cache_size=None, cwd=None, env=None)
        async with anyio.create_task_group() as tg:
            session = Session("s", None, settings, starter=starter, outlet=outlet, stats=Stats(), tg=tg)
            with anyio.fail_after(10):
                await session.start()
                await test(session, starter, outlet)
                await session.close()

    anyio.run(main)


def submit(session: Session, key: Any, **kw: Any) -> tuple[mc.Eval, anyio.Event]:
    answered = anyio.Event()
    ev = mc.Eval(key=key, request_id=key, code="...", **kw)
    ev.on_answer.append(lambda ev: answered.set())
    session.submit(ev)
    return ev, answered


def test_a_timeout_kill_answers_with_the_output_the_pipes_still_held():
    async def test(session: Session, starter: Starter, outlet: Outlet) -> None:
        child = starter.children[0]
        ev, answered = submit(session, 1, timeout=0.05)
        assert [type(m) for m in child.sent] == [ch.Exec]  # written from submit itself
        child.pipe.append(b"last words\n")  # written, not read yet, when the kill comes
        await answered.wait()  # the loop timer of timeout + grace fires
        r = ev.result
        assert (r.status, r.cause, r.state_lost) == ("killed", "timeout", True)
        assert child.killed and r.stdout == "last words\n"
        assert outlet.outputs == [(1, "stdout", "last words\n")]

    run(test, grace=0.05)


def test_the_timer_is_armed_again_for_each_later_deadline():
    async def test(session: Session, starter: Starter, outlet: Outlet) -> None:
        first = starter.children[0]
        ev, answered = submit(session, 1)
        assert session.interrupt() is True
        assert first.wakes == 1
        await first.woken_thrice.wait()  # the wake-up is repeated every REWAKE s
        first.done(ev.cell_id, error=None, stopped="interrupt")
        await answered.wait()
        # A later, longer deadline after the alarm has fired: a timeout kill in a new eval.
        ev2, answered2 = submit(session, 2, timeout=0.05)
        await answered2.wait()
        assert (ev2.result.status, ev2.result.cause) == ("killed", "timeout")

    run(test, grace=0.5)
