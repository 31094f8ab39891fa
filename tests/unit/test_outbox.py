"""The Outbox over a real non-blocking pipe: direct writes, queueing, back-pressure, EPIPE."""

from __future__ import annotations

import fcntl
import os

import anyio
import pytest

from cellbox.supervisor.outbox import Outbox

FRAME = 4096


@pytest.fixture
def pipe():
    r, w = os.pipe()
    fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 16)
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_writes_at_once_when_nothing_is_queued(pipe):
    r, w = pipe

    async def main() -> None:
        outbox = Outbox()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, w)
            await anyio.wait_all_tasks_blocked()
            outbox.send(b"one\n")
            assert outbox.queued == 0
            assert _read_all(r) == b"one\n"  # already in the pipe: no task switch needed
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_pauses_at_high_water_and_resumes_at_low_water(pipe):
    r, w = pipe
    high, low, total = 64 * FRAME, 16 * FRAME, 512 * FRAME
    frames = [bytes([i % 251]) * FRAME for i in range(total // FRAME)]
    received = bytearray()

    async def main() -> None:
        outbox = Outbox(high_water=high, low_water=low)
        blocked = anyio.Event()
        done = anyio.Event()
        most = 0

        async def produce() -> None:
            nonlocal most
            for frame in frames:
                if outbox.paused:
                    blocked.set()
                await outbox.wait_writable()
                assert outbox.queued < high  # not paused: below high water (or drained to low)
                outbox.send(frame)
                most = max(most, outbox.queued)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, w)
            tg.start_soon(produce)
            with anyio.fail_after(10):
                await blocked.wait()  # nobody reads: the pipe fills, then the queue, then pause
            assert outbox.paused
            assert high <= outbox.queued <= high + FRAME
            assert not done.is_set()
            resumed = False
            with anyio.fail_after(20):
                while not done.is_set() or outbox.queued:
                    await anyio.wait_readable(r)
                    received.extend(_read_all(r))
                    resumed = resumed or not outbox.paused
                    await anyio.sleep(0)  # let the writer and the producer run
            assert resumed and not outbox.paused
            assert await outbox.flush(1)
            received.extend(_read_all(r))
            tg.cancel_scope.cancel()
        assert most <= high + FRAME

    anyio.run(main)
    assert bytes(received) == b"".join(frames)  # nothing dropped, order kept


def test_flush_is_bounded_while_the_reader_does_not_read(pipe):
    r, w = pipe

    async def main() -> None:
        outbox = Outbox()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, w)
            await anyio.wait_all_tasks_blocked()
            outbox.send(b"x" * (1 << 18))  # more than the pipe holds
            assert outbox.queued > 0
            assert not await outbox.flush(0.05)
            _read_all(r)
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_a_closed_reader_breaks_the_outbox_and_nothing_waits(pipe):
    r, w = pipe
    broken = []

    async def main() -> None:
        outbox = Outbox(high_water=FRAME, low_water=0, on_broken=lambda: broken.append(True))
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, w)
            await anyio.wait_all_tasks_blocked()
            outbox.send(b"x" * (1 << 18))
            assert outbox.paused
            os.close(r)
            with anyio.fail_after(5):
                await outbox.wait_writable()
                assert await outbox.flush(5)
            assert outbox.broken and not outbox.paused and outbox.queued == 0
            outbox.send(b"dropped")
            assert outbox.queued == 0
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert broken == [True]


def test_reopens_at_low_water_not_only_when_empty(pipe):
    r, w = pipe
    high, low = 32 * FRAME, 16 * FRAME
    queued_when_open: list[int] = []

    async def main() -> None:
        outbox = Outbox(high_water=high, low_water=low)
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, w)
            await anyio.wait_all_tasks_blocked()
            while not outbox.paused:  # nobody reads: the pipe fills, then the queue
                outbox.send(b"x" * FRAME)
                await anyio.sleep(0)
            outbox.when_open(lambda: queued_when_open.append(outbox.queued))
            with anyio.fail_after(10):
                while outbox.queued:
                    await anyio.wait_readable(r)
                    os.read(r, 4096)  # a slow reader: the queue shrinks a little at a time
                    await anyio.sleep(0)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert len(queued_when_open) == 1
    assert 0 < queued_when_open[0] <= low  # at low water, while bytes are still queued
