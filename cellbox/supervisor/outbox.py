"""The server's outbound byte stream (stdout): a bounded queue with back-pressure.

Theory of operation: ``send`` takes one framed message. When nothing is queued it writes to
the descriptor at once (the hot path: no task switch); whatever the descriptor does not take
is queued, and the writer task (``run``) writes the queue out, coalescing frames into as few
writes as it can and waiting for the descriptor to become writable when it is full.

Messages are never dropped here: replies and notifications must all reach the client, and the
producers bound what they emit (the per-eval and between-cell output caps). What the Outbox
bounds is the *rate*: once ``queued`` reaches ``high_water`` it is ``paused``, and producers
that can wait (the readers of the children's output pipes) call ``wait_writable`` before each
read, which returns once ``queued`` has fallen to ``low_water``. A child that keeps printing
then blocks on its own full pipe until the client reads again.

Invariants:
- ``queued`` counts the bytes accepted by ``send`` and not yet written (including those the
  writer holds); bytes reach the descriptor in ``send`` order;
- ``paused`` is true iff ``queued >= high_water`` was reached and ``queued`` has not fallen to
  ``low_water`` since; a producer that awaits ``wait_writable`` before each ``send`` keeps
  ``queued`` below ``high_water`` plus one frame;
- once the reader end is gone (``EPIPE``) the Outbox is ``broken``: ``send`` discards, nothing
  waits on it any more (``wait_writable`` and ``flush`` return at once), ``on_broken`` is
  called once.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import deque
from typing import Callable

import anyio

log = logging.getLogger("cellbox.supervisor")

HIGH_WATER = 4 << 20
LOW_WATER = 1 << 20


class Outbox:
    """Frames for one output descriptor; see the module docstring.

    ``on_broken`` is called (once) when the reader end is closed.
    """

    def __init__(
        self,
        *,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
        on_broken: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= low_water <= high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        self.high_water = high_water
        self.low_water = low_water
        self.queued = 0
        self.paused = False
        self.broken = False
        self._on_broken = on_broken
        self._fd: int | None = None  # set by ``run`` once the descriptor is prepared
        self._frames: deque[bytes] = deque()
        self._wake = anyio.Event()  # set when frames wait for the writer
        self._drained = anyio.Event()  # set while ``queued`` is 0
        self._drained.set()
        self._writable = anyio.Event()  # set while not ``paused``
        self._writable.set()
        self._on_open: list[Callable[[], None]] = []  # called when ``paused`` ends

    def send(self, frame: bytes) -> None:
        """Write ``frame`` now if nothing is queued, else queue it. Never blocks, never drops
        (except once ``broken``); producers that can wait should ``await wait_writable()``
        first."""
        if self.broken:
            return
        if not self.queued and self._fd is not None:
            try:
                n = os.write(self._fd, frame)
            except BlockingIOError:
                n = 0
            except (BrokenPipeError, ConnectionResetError):
                self._break()
                return
            if n == len(frame):
                return
            frame = frame[n:]
        self._frames.append(frame)
        if not self.queued:
            self._drained = anyio.Event()
        self.queued += len(frame)
        self._wake.set()
        if not self.paused and self.queued >= self.high_water:
            self.paused = True
            self._writable = anyio.Event()

    async def wait_writable(self) -> None:
        """Return at once unless ``paused``; else wait until ``queued`` has fallen to
        ``low_water`` (or the Outbox is broken). Cancellable."""
        if self.paused:
            await self._writable.wait()

    def when_open(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once not ``paused``: now, or when ``queued`` falls to
        ``low_water`` (for producers that read by loop callbacks instead of awaiting)."""
        if not self.paused:
            callback()
        else:
            self._on_open.append(callback)

    async def flush(self, timeout: float = 2.0) -> bool:
        """Wait up to ``timeout`` s until everything queued is written; True iff it was (or
        the Outbox is broken: there is nothing left to wait for)."""
        with anyio.move_on_after(timeout):
            await self._drained.wait()
        return self._drained.is_set()

    async def run(self, fd: int) -> None:
        """The writer task: make ``fd`` non-blocking (a pipe, socket or terminal), then write
        the queue out until cancelled or broken."""
        if pollable(fd):
            os.set_blocking(fd, False)
        self._fd = fd
        while not self.broken:
            if not self._frames:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            data = self._frames[0] if len(self._frames) == 1 else b"".join(self._frames)
            self._frames.clear()
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    await anyio.wait_writable(fd)
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self._break()
                    return
                view = view[n:]
                self._written(n)

    def _written(self, n: int) -> None:
        self.queued -= n
        if self.paused and self.queued <= self.low_water:
            self._open()
        if not self.queued:
            self._drained.set()

    def _open(self) -> None:
        self.paused = False
        self._writable.set()
        callbacks, self._on_open = self._on_open, []
        for callback in callbacks:
            callback()

    def _break(self) -> None:
        log.info("stdout closed by the client")
        self.broken = True
        self._frames.clear()
        self.queued = 0
        self._open()
        self._drained.set()
        self._wake.set()  # let the writer see it and end
        if self._on_broken is not None:
            self._on_broken()


def pollable(fd: int) -> bool:
    """True iff ``fd`` can be polled (a pipe, socket or terminal; not a regular file)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)
