"""Shared fixture for the executor tests: a fresh loop and Executor per test, in-process.

``Harness.run(code)`` drives ``Executor.run`` with ``loop.run_until_complete`` and, like the
child's main loop, hands a ``KeyboardInterrupt``/``SystemExit`` that escaped the loop to
``Executor.handle_escaped``. SIGINT is routed to ``Executor.interrupt`` while a test runs.
"""

from __future__ import annotations

import asyncio
import builtins
import signal
from typing import Any

import pytest

from cellbox.child.executor import Executor
from cellbox.protocol.channel import Done
from cellbox.protocol.messages import Display


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self._builtins = dict(builtins.__dict__)
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.events: list[tuple[str, Any]] = []  # ("stdout"|"stderr", text) / ("display", D)
        self.inputs: list[tuple[str, bool]] = []
        self.answers: list[str | BaseException] = []
        kwargs.setdefault("request_input", self._request_input)
        self.ex = Executor(emit_stream=self._emit_stream, emit_display=self._emit_display,
                           **kwargs)
        self._sigint: Any = None
        self.count = 0

    def install(self) -> None:
        """Install the executor (lazily, from the test body: pytest swaps ``sys.stdout``
        between a test's setup and call phases, which would undo an install done in setup)."""
        if self._sigint is None:
            self.ex.install()
            self._sigint = signal.signal(
                signal.SIGINT, lambda signum, frame: self.ex.interrupt("interrupt", frame))

    def _emit_stream(self, name: str, text: str) -> None:
        self.events.append((name, text))

    def _emit_display(self, display: Display) -> None:
        self.events.append(("display", display))

    def _request_input(self, prompt: str, password: bool) -> str:
        self.inputs.append((prompt, password))
        answer = self.answers.pop(0) if self.answers else "answer"
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def run(self, code: str, **kwargs: Any) -> Done:
        self.install()
        self.count += 1
        kwargs.setdefault("execution_count", self.count)
        task = self.loop.create_task(self.ex.run(code, **kwargs))
        while True:
            try:
                return self.loop.run_until_complete(task)
            except (KeyboardInterrupt, SystemExit) as exc:
                self.ex.handle_escaped(exc)

    def ok(self, code: str, **kwargs: Any) -> Done:
        done = self.run(code, **kwargs)
        assert done.error is None, done.error.traceback
        return done

    def value(self, code: str, **kwargs: Any) -> str | None:
        done = self.ok(code, **kwargs)
        return None if done.value is None else done.value.repr

    def error(self, code: str, **kwargs: Any) -> Done:
        done = self.run(code, **kwargs)
        assert done.error is not None, f"expected an error, got {done.value}"
        return done

    def text(self, stream: str = "stdout") -> str:
        return "".join(t for name, t in self.events if name == stream)

    def chunks(self, stream: str = "stdout") -> list[str]:
        return [t for name, t in self.events if name == stream]

    @property
    def displays(self) -> list[Display]:
        return [d for name, d in self.events if name == "display"]

    def close(self) -> None:
        if self._sigint is not None:
            signal.signal(signal.SIGINT, self._sigint)
            self.ex.uninstall()
        loop = self.loop
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)
        current = builtins.__dict__
        for name in [n for n in current if n not in self._builtins]:
            del current[name]
        for name, value in self._builtins.items():
            if current.get(name, object()) is not value:
                current[name] = value


@pytest.fixture
def h():
    harness = Harness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def make_harness():
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        harness = Harness(**kwargs)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.close()
