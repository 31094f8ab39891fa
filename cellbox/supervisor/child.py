"""One child process as the supervisor sees it: a pid, a channel, two output pipes.

Theory of operation: a launcher (``launcher.py``) starts the process and hands its pid and
descriptors to ``Child``, which registers them with the event loop as reader callbacks (no
task per child, no epoll change per message): the channel's messages and the pipes' bytes go
straight to the ``Listener``. Writes to the channel go out at once when the socket takes
them; otherwise they queue, in order, with the SIGINT wake-ups queued behind them, so a
wake-up never overtakes the ``Interrupt`` it belongs to. The ``Reaper`` is the only caller of
``waitpid``; on exit the pipes are drained and every descriptor is closed.

Invariants:
- each descriptor is owned by one ``_Fd``, which forgets it when it closes it: a closed
  number (which ``os.pipe`` may hand to the next child) is never read, written or closed again;
- every event reaches the listener on the loop thread: messages, output, end or corruption of
  the channel, exit;
- a pid is signalled only before it is reaped (a zombie keeps its pid);
- while the gate is paused (the client does not read) the pipes and the channel are left
  unread after the read under way, so the bytes a child sends wait in the kernel and the
  child blocks; on exit what the channel still holds is read before it is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from cellbox.protocol import channel as ch
from cellbox.supervisor import process
from cellbox.supervisor.cgroups import ChildGroup

log = logging.getLogger("cellbox.supervisor")

_READ = 1 << 18
_DRAIN_READS = 64  # per pipe: a pipe holds at most its capacity of what was written before


class Listener(Protocol):
    """What a child reports to its owner (all called on the event loop thread)."""

    def on_message(self, msg: Any) -> None: ...
    def on_output(self, stream: str, data: bytes) -> None: ...
    def on_channel_closed(self, corrupt: bool) -> None: ...
    def on_exit(self, status: int, cpu_used: float) -> None: ...


class Gate(Protocol):
    """Back-pressure from the client side: while ``paused``, pipes and channel are not read."""

    paused: bool

    def when_open(self, callback: Callable[[], None]) -> None: ...


class _Fd:
    """One owned descriptor. ``fd`` is None once closed."""

    __slots__ = ("fd", "reading", "poll")

    def __init__(self, fd: int, poll: Any = None) -> None:
        self.fd: int | None = fd
        self.reading = False
        self.poll = poll  # a ``select.poll`` it is registered with, if any
        if poll is not None:
            poll.register(fd, select.POLLIN)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if self.poll is not None:
            self.poll.unregister(fd)
        if self.reading:
            loop.remove_reader(fd)
            self.reading = False
        os.close(fd)


class Reaper:
    """Reaps every child of the supervisor and reports the exit of the ones it watches."""

    def __init__(self) -> None:
        self._watched: dict[int, Callable[[int, Any], None]] = {}
        # Exits of pids nobody watched yet: a forked child can die before its pid is known.
        self._unclaimed: dict[int, tuple[int, Any]] = {}

    @property
    def watched(self) -> set[int]:
        return set(self._watched)

    def watch(self, pid: int, on_exit: Callable[[int, Any], None]) -> None:
        self._watched[pid] = on_exit
        self.reap()  # it may have died already
        if pid in self._unclaimed:
            del self._watched[pid]
            on_exit(*self._unclaimed.pop(pid))

    def reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait3(os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            callback = self._watched.pop(pid, None)
            if callback is not None:
                callback(status, rusage)
            else:
                self._unclaimed[pid] = (status, rusage)
                while len(self._unclaimed) > 256:  # orphans of user code: keep only recent ones
                    del self._unclaimed[next(iter(self._unclaimed))]

    async def run(self) -> None:
        """Reap on every SIGCHLD, and once a second in case a signal was coalesced away."""
        with anyio.open_signal_receiver(signal.SIGCHLD) as signals:

            async def poll() -> None:
                while True:
                    await anyio.sleep(1.0)
                    self.reap()

            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                async for _ in signals:
                    self.reap()


class _Starting:
    """The listener while the child starts: waits for ``Hello``, keeps stderr for the error."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.hello: ch.Hello | None = None
        self.stderr: list[bytes] = []

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, ch.Hello):
            self.hello = msg
            self.event.set()

    def on_output(self, stream: str, data: bytes) -> None:
        if len(self.stderr) < 64:
            self.stderr.append(data)

    def on_channel_closed(self, corrupt: bool) -> None:
        self.event.set()

    def on_exit(self, status: int, cpu_used: float) -> None:
        self.event.set()


_WAKE = object()  # a SIGINT queued behind channel writes


class Child:
    def __init__(self, pid: int, sock: socket.socket, out_fd: int, err_fd: int, *, reaper: Reaper,
                 gate: Gate | None = None, marker: str = "", status_fd: int | None = None,
                 cgroup: ChildGroup | None = None) -> None:
        self.pid = pid  # a contained child's own pid once ``found`` (its init's until then)
        #: A contained child's init (pid 1 of its PID namespace), which the reaper watches:
        #: when it exits, so has everything in the namespace.
        self.init = pid if status_fd is not None else None
        self._status_pipe = _Fd(status_fd) if status_fd is not None else None
        self.cgroup = cgroup  # its own cgroups (limits for all its processes), if any
        self.oom_killed: bool | None = None  # once it exited: did the kernel OOM-kill in it?
        self.marker = marker  # its ``process.child_marker`` (set when a session configures it)
        self.python = ""
        self.status: int | None = None
        self.cpu_used = 0.0
        self.exited = anyio.Event()
        self.started = time.monotonic()
        self.listener: Listener = _Starting()
        self._loop = asyncio.get_running_loop()
        self._reaper = reaper
        self._gate = gate
        self._sock: socket.socket | None = sock
        self._poll = select.poll()  # the pipes: is there anything for ``drain``?
        self._pipes = {"stdout": _Fd(out_fd, self._poll), "stderr": _Fd(err_fd, self._poll)}
        self._channel_reading = False
        self._channel_paused = False  # stopped by the gate; resumed when it opens
        self._reader = ch.ChannelReader(to_child=False)
        self._writes: deque[Any] = deque()
        self._editor_waiters: dict[int, Callable[[Any], None]] = {}
        sock.setblocking(False)
        for pipe in self._pipes.values():
            os.set_blocking(pipe.fd, False)  # type: ignore[arg-type]
        self._loop.add_reader(sock.fileno(), self._on_channel)
        self._channel_reading = True
        for stream in self._pipes:
            self._read_pipe(stream)
        reaper.watch(pid, self._on_exit)

    # -- reading ---------------------------------------------------------------------------

    def _on_channel(self) -> None:
        self._read_channel()
        if self._gate is not None and self._gate.paused and self._channel_reading:
            # The client is not reading: displays and replies wait in the socket, and a
            # child that keeps sending blocks, as it does on a full pipe.
            self._stop_channel()
            self._channel_paused = True
            self._gate.when_open(self._resume_channel)

    def _resume_channel(self) -> None:
        if self._channel_paused and self._sock is not None:
            self._channel_paused = False
            self._loop.add_reader(self._sock.fileno(), self._on_channel)
            self._channel_reading = True

    def _read_channel(self) -> bool:
        """Read and deliver what one ``recv`` gives; False once there is nothing to read."""
        sock = self._sock
        if sock is None:
            return False
        try:
            data = sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._stop_channel()
            self.listener.on_channel_closed(False)
            return False
        try:
            msgs = self._reader.feed(data)
        except ch.ChannelError as exc:
            log.error("child %d: corrupt channel (%s)", self.pid, exc)
            self._stop_channel()
            self.listener.on_channel_closed(True)
            return False
        drained = False
        for msg in msgs:
            if isinstance(msg, ch.CompleteReply | ch.InspectReply):
                waiter = self._editor_waiters.pop(msg.id, None)
                if waiter is not None:
                    waiter(msg)
                continue
            if not drained:  # output written before the message goes first
                self.drain()
                drained = True
            self.listener.on_message(msg)
        return True

    def _stop_channel(self) -> None:
        if self._channel_reading and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._channel_reading = False
        self._channel_paused = False

    def _read_pipe(self, stream: str) -> None:
        """Register the pipe's reader, unless the gate is closed (then when it opens)."""
        pipe = self._pipes[stream]
        if pipe.fd is None or pipe.reading:
            return
        if self._gate is not None and self._gate.paused:
            self._gate.when_open(lambda: self._read_pipe(stream))
            return
        pipe.reading = True
        self._loop.add_reader(pipe.fd, self._on_pipe, stream)

    def _on_pipe(self, stream: str) -> None:
        pipe = self._pipes[stream]
        if not self._read_once(stream, pipe):
            return
        if self._gate is not None and self._gate.paused and pipe.fd is not None and pipe.reading:
            # The client is not reading: stop reading, so a printing child blocks.
            self._loop.remove_reader(pipe.fd)
            pipe.reading = False
            self._gate.when_open(lambda: self._read_pipe(stream))

    def _read_once(self, stream: str, pipe: _Fd) -> bool:
        """Read what is there; False at end of file (the pipe is then closed)."""
        if pipe.fd is None:
            return False
        try:
            data = os.read(pipe.fd, _READ)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            pipe.close(self._loop)
            return False
        self.listener.on_output(stream, data)
        return True

    def drain(self) -> None:
        """Deliver what the pipes hold now (bounded: a child that keeps writing cannot
        starve the loop)."""
        if not any(events & ~select.POLLNVAL for _, events in self._poll.poll(0)):
            return  # the common case: nothing there (one system call, no read buffers)
        for stream, pipe in self._pipes.items():
            for _ in range(_DRAIN_READS):
                if pipe.fd is None:
                    break
                try:
                    data = os.read(pipe.fd, _READ)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    data = b""
                if not data:
                    pipe.close(self._loop)
                    break
                self.listener.on_output(stream, data)

    # -- writing ---------------------------------------------------------------------------

    def send(self, msg: ch.Msg) -> None:
        """Write ``msg`` after everything written before it (never blocks)."""
        self._write(ch.encode(msg))

    def wake(self) -> None:
        """SIGINT the child once everything written before has reached the channel."""
        if self._writes:
            self._writes.append(_WAKE)
        else:
            self.signal(signal.SIGINT)

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            return  # the child is gone; its exit is reported to the listener
        if self._writes:
            self._writes.append(memoryview(data))
            return
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return
        if n < len(data):
            self._writes.append(memoryview(data)[n:])
            self._loop.add_writer(sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        sock = self._sock
        while self._writes and sock is not None:
            item = self._writes[0]
            if item is _WAKE:
                self._writes.popleft()
                self.signal(signal.SIGINT)
                continue
            try:
                n = sock.send(item)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._writes.clear()
                break
            if n < len(item):
                self._writes[0] = item[n:]
                return
            self._writes.popleft()
        if sock is not None:
            self._loop.remove_writer(sock.fileno())

    def expect_editor_reply(self, msg_id: int, callback: Callable[[Any], None]) -> None:
        self._editor_waiters[msg_id] = callback

    # -- signals and exit ------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, sig)
            except OSError:
                pass

    def found(self) -> None:
        """Learn a contained child's own pid (call once it has said ``Hello``)."""
        if self.init is not None and self.status is None:
            self.pid = process.child_of_init(self.init) or self.pid

    def kill(self) -> None:
        """SIGKILL the child, its process group and every descendant, including those
        reparented to the supervisor (found by its marker). A contained child: its init,
        which takes its whole PID namespace with it."""
        if self.init is not None:
            if self.status is None:
                try:
                    os.kill(self.init, signal.SIGKILL)
                except OSError:
                    pass
            return
        roots = [self.pid] if self.status is None else []
        others = self._reaper.watched - set(roots)  # other sessions' and later children
        process.kill_tree(roots + process.orphans(self.marker, others))

    def _on_exit(self, status: int, rusage: Any) -> None:
        if self._status_pipe is not None:  # a contained child: its init reports its status
            status = self._child_status(status)
        self.status = status
        if rusage is not None:
            self.cpu_used = rusage.ru_utime + rusage.ru_stime
        if self.init is None:  # descendants it left (reparented here) die with it
            process.kill_tree(process.orphans(self.marker, self._reaper.watched))
        if self.cgroup is not None:
            # The count is the group's whole life: it names only a death by SIGKILL.
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                self.oom_killed = self.cgroup.oom_killed()
            self.cgroup.kill()  # whatever is left in its cgroup
            if not self.cgroup.remove():
                self._loop.call_later(1.0, self.cgroup.remove)
        if self._channel_paused:  # what it sent before it exited still counts
            self._channel_paused = False
            for _ in range(_DRAIN_READS):
                if not self._read_channel():
                    break
        self.drain()
        self.close()
        self.exited.set()
        self.listener.on_exit(status, self.cpu_used)

    def _child_status(self, init_status: int) -> int:
        """The wait status its init wrote; else (init was killed) init's own."""
        pipe = self._status_pipe
        data = b""
        if pipe is not None and pipe.fd is not None:
            try:
                data = os.read(pipe.fd, ch.STATUS.size)
            except OSError:
                pass
        return ch.STATUS.unpack(data)[0] if len(data) == ch.STATUS.size else init_status

    def close(self) -> None:
        """Release every descriptor (the process itself is the reaper's)."""
        if self._status_pipe is not None:
            self._status_pipe.close(self._loop)
        for pipe in self._pipes.values():
            pipe.close(self._loop)
        self._stop_channel()
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._writes:
                self._loop.remove_writer(sock.fileno())
                self._writes.clear()
            sock.close()
        for waiter in self._editor_waiters.values():
            waiter(None)
        self._editor_waiters.clear()

    def rss(self) -> int | None:
        return process.rss_bytes(self.pid if self.status is None else None)
