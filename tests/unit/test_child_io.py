"""One child's descriptors as the supervisor owns them (``supervisor/child.py``), on a real
event loop with a socketpair and two pipes standing in for the process: no process is
started and no signal is sent (``signal`` is recorded instead)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
from typing import Any

import anyio
import pytest

from cellbox.protocol import channel as ch
from cellbox.supervisor import child as child_mod
from cellbox.supervisor.launcher import forkable

F_SETPIPE_SZ = 1031


class FakeReaper:
    watched: set[int] = set()

    def watch(self, pid: int, on_exit: Any) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.closed = anyio.Event()

    def on_message(self, msg: Any) -> None:
        self.events.append(("message", msg))

    def on_output(self, stream: str, data: bytes) -> None:
        self.events.append(("output", stream, data))

    def on_channel_closed(self, corrupt: bool) -> None:
        self.events.append(("closed", corrupt))
        self.closed.set()

    def on_exit(self, status: int, cpu_used: float) -> None:
        self.events.append(("exit", status))

    def output(self, stream: str = "stdout") -> bytes:
        return b"".join(e[2] for e in self.events if e[0] == "output" and e[1] == stream)


class RecordingChild(child_mod.Child):
    """A ``Child`` whose signals are recorded with the bytes still queued for the channel."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.signals: list[tuple[int, int]] = []
        self.signalled = anyio.Event()
        super().__init__(*args, **kw)

    def signal(self, sig: int) -> None:
        queued = sum(len(item) for item in self._writes if item is not child_mod._WAKE)
        self.signals.append((sig, queued))
        self.signalled.set()


class Rig:
    """A ``RecordingChild`` over a socketpair and two pipes; ``peer`` is the child's end."""

    def __init__(self) -> None:
        self.peer, sup = socket.socketpair()
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.rec = Recorder()
        self.child = RecordingChild(4_000_000, sup, self.out_r, self.err_r, reaper=FakeReaper(),
                                    marker="unit-test-no-such-session")
        self.child.listener = self.rec

    def close(self) -> None:
        self.child.close()
        self.peer.close()
        for fd in (self.out_w, self.err_w):
            try:
                os.close(fd)
            except OSError:
                pass


def run(test: Any) -> None:
    async def main() -> None:
        rig = Rig()
        try:
            with anyio.fail_after(5):
                await test(rig)
        finally:
            rig.close()

    anyio.run(main)


async def turns(n: int = 10) -> None:
    """Let the loop run ``n`` iterations (its ready reader callbacks run in each)."""
    for _ in range(n):
        await asyncio.sleep(0)


# -- descriptors -----------------------------------------------------------------------------


def test_a_closed_descriptor_number_is_never_closed_again():
    async def test(rig: Rig) -> None:
        numbers = [rig.out_r, rig.err_r]
        spare_r, spare_w = os.pipe()
        rig.child.close()
        try:
            # os.pipe may hand those numbers to the next child: make them live again.
            for n in numbers:
                os.dup2(spare_r, n)
            rig.child.close()
            rig.child.drain()
            for n in numbers:
                os.fstat(n)  # still open: the child forgot the number when it closed it
        finally:
            for n in numbers:
                os.close(n)
            os.close(spare_r)
            os.close(spare_w)

    run(test)


def test_end_of_channel_is_reported_once():
    async def test(rig: Rig) -> None:
        rig.peer.shutdown(socket.SHUT_WR)
        await rig.rec.closed.wait()
        await turns()
        assert [e for e in rig.rec.events if e[0] == "closed"] == [("closed", False)]

    run(test)


def test_output_written_before_a_message_is_delivered_before_it():
    async def test(rig: Rig) -> None:
        os.write(rig.out_w, b"printed first\n")
        rig.peer.sendall(ch.encode(ch.Done(id=1, execution_count=1)))
        rig.child._on_channel()  # the channel's callback runs before the pipe's
        kinds = [e[0] for e in rig.rec.events]
        assert kinds == ["output", "message"]
        assert rig.rec.output() == b"printed first\n"

    run(test)


def test_drain_delivers_all_that_a_full_pipe_holds():
    async def test(rig: Rig) -> None:
        try:
            size = fcntl.fcntl(rig.out_w, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pytest.skip("cannot grow a pipe here")
        os.set_blocking(rig.out_w, False)
        data = bytes(range(256)) * (size // 256)
        written = 0
        while written < len(data):
            try:
                written += os.write(rig.out_w, data[written:])
            except BlockingIOError:
                break
        assert written > 2 * child_mod._READ  # more than one read holds
        rig.child.drain()  # before any reader callback ran
        assert rig.rec.output() == data[:written]

    run(test)


def test_a_pipe_at_end_of_file_is_closed_and_unregistered():
    async def test(rig: Rig) -> None:
        os.close(rig.out_w)
        for _ in range(100):
            if rig.child._pipes["stdout"].fd is None:
                break
            await asyncio.sleep(0)
        assert rig.child._pipes["stdout"].fd is None

    run(test)


def test_a_corrupt_channel_is_reported_as_corrupt():
    async def test(rig: Rig) -> None:
        rig.peer.sendall((ch.MAX_FRAME + 1).to_bytes(4, "big"))
        await rig.rec.closed.wait()
        assert [e for e in rig.rec.events if e[0] == "closed"] == [("closed", True)]

    run(test)


def test_the_exit_delivers_what_the_pipes_still_held_first():
    async def test(rig: Rig) -> None:
        os.write(rig.err_w, b"dying words\n")
        rig.child._on_exit(0, None)  # the reaper's callback, before any pipe callback ran
        assert rig.rec.events == [("output", "stderr", b"dying words\n"), ("exit", 0)]

    run(test)


# -- ordered writes and wake-ups -------------------------------------------------------------


def test_wake_with_nothing_queued_signals_at_once():
    async def test(rig: Rig) -> None:
        rig.child.send(ch.Interrupt(id=1))
        rig.child.wake()
        assert rig.child.signals == [(signal.SIGINT, 0)]

    run(test)


def test_wake_behind_an_exec_still_being_written_waits_for_it():
    async def test(rig: Rig) -> None:
        child = rig.child
        exec_ = ch.Exec(id=1, code="x = 1  # " + "y" * (8 << 20), execution_count=1)
        child.send(exec_)  # more than the socket takes: the rest is queued
        assert child._writes
        child.send(ch.Interrupt(id=1))
        child.wake()
        assert child.signals == []  # not before the Interrupt it belongs to is written
        reader = ch.ChannelReader(to_child=True)
        loop = asyncio.get_running_loop()
        rig.peer.setblocking(False)
        msgs: list[Any] = []
        while len(msgs) < 2:
            msgs += reader.feed(await loop.sock_recv(rig.peer, 1 << 20))
        await child.signalled.wait()
        assert [type(m) for m in msgs] == [ch.Exec, ch.Interrupt]
        assert child.signals == [(signal.SIGINT, 0)]  # once, after every byte before it

    run(test)


# -- what may be forked ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, ok",
    [
        (None, True),
        ({}, True),
        ({"FOO": "1", "PATH_EXTRA": "x"}, True),
        ({"PYTHONPATH": "/x"}, False),
        ({"LD_PRELOAD": "libx.so"}, False),
        ({"MALLOC_ARENA_MAX": "2"}, False),
    ],
)
def test_forkable_only_without_interpreter_start_variables(env, ok):
    assert forkable(env) is ok
