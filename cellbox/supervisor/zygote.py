"""The supervisor's side of the zygote: start it, ask it for children, replace it if it dies.

Theory of operation: the zygote (``cellbox.child.zygote``) is spawned once, on first use, with
a SOCK_SEQPACKET control socket. ``fork`` sends ``Spawn`` with the new child's four descriptors
attached and waits for ``Spawned`` with the child's pid; requests are serialised by a lock, so
replies match requests. If the zygote is unavailable (it failed to start, died, or keeps dying)
``fork`` returns None and the caller starts a fresh interpreter instead.

Invariants: at most one zygote process at a time; a zygote that dies is respawned on the next
request, but after ``MAX_FAILURES`` deaths the zygote is disabled for the server's life.
"""

from __future__ import annotations

import array
import logging
import os
import signal
import socket
import sys
from typing import Any

import anyio

from cellbox.protocol import channel as ch
from cellbox.supervisor.process import SPAWN_SIGDEF, boot_code

log = logging.getLogger("cellbox.supervisor")

MAX_FAILURES = 3
START_TIMEOUT = 30.0

_BOOT = boot_code("cellbox.child.zygote")


class Zygote:
    def __init__(self, reaper: Any) -> None:
        self.reaper = reaper
        self.pid: int | None = None
        self.failures = 0
        self.forks = 0
        self._sock: socket.socket | None = None
        self._dead = False
        self._gone = anyio.Event()  # set when the current zygote process has been reaped
        self._lock = anyio.Lock()
        self._reader = ch.ChannelReader(to_child=False)

    @property
    def enabled(self) -> bool:
        return self.failures < MAX_FAILURES

    async def warm(self) -> None:
        """Start the zygote now (at server start), so the first session does not wait for it."""
        async with self._lock:
            if self._sock is None and self.enabled:
                try:
                    await self._start()
                except (OSError, TimeoutError, ch.ChannelError) as exc:
                    log.warning("zygote failed to start (%s); sessions start fresh", exc)
                    self.failures += 1
                    self._reset()

    async def fork(self, env: dict[str, str]) -> tuple[int, socket.socket, int, int] | None:
        """A new child forked from the zygote: ``(pid, channel, stdout_r, stderr_r)``, or None
        if the zygote cannot serve (the caller then spawns a fresh interpreter)."""
        if not self.enabled:
            return None
        async with self._lock:
            if self._dead:
                self._reset()
            try:
                if self._sock is None:
                    await self._start()
                return await self._fork(env)
            except (OSError, TimeoutError, ch.ChannelError) as exc:
                log.warning("zygote unavailable (%s); starting a fresh interpreter", exc)
                if not self._dead:
                    self.failures += 1
                self._reset()
                if self.pid is not None:
                    os.kill(self.pid, signal.SIGKILL)
                return None

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zenv = dict(os.environ)
        zenv["CELLBOX_PARENT"] = str(os.getpid())
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-c", _BOOT],
                zenv,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
                setpgroup=0,
                setsigdef=SPAWN_SIGDEF,
                setsigmask=(),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock, self.pid = ours, pid
        self._gone = anyio.Event()
        self.reaper.watch(pid, self._exited)
        with anyio.fail_after(START_TIMEOUT):
            hello = await self._receive()
        if hello.pid != pid:
            raise OSError(f"zygote announced pid {hello.pid}, expected {pid}")
        log.info("zygote %d ready", pid)

    async def _fork(self, env: dict[str, str]) -> tuple[int, socket.socket, int, int]:
        assert self._sock is not None
        sup_sock, child_sock = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY)
        theirs = [devnull, out_w, err_w, child_sock.fileno()]
        try:
            frame = ch.encode(ch.Spawn(env=env))
            await anyio.wait_writable(self._sock)
            self._sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", theirs))])
            with anyio.fail_after(START_TIMEOUT):
                reply = await self._receive()
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            sup_sock.close()
            raise
        finally:
            for fd in (devnull, out_w, err_w):
                os.close(fd)
            child_sock.close()
        if reply.pid <= 0:
            for fd in (out_r, err_r):
                os.close(fd)
            sup_sock.close()
            raise OSError("the zygote could not fork")
        self.forks += 1
        return reply.pid, sup_sock, out_r, err_r

    async def _receive(self) -> ch.Spawned:
        assert self._sock is not None
        while True:
            await anyio.wait_readable(self._sock)
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise OSError("the zygote closed its control socket")
            for msg in self._reader.feed(data):
                if isinstance(msg, ch.Spawned):
                    return msg

    def _exited(self, status: int, rusage: Any) -> None:
        # Only mark it: a request may be waiting on the socket; ``fork`` resets it.
        if self.enabled:  # not when close() stopped it
            log.warning("zygote %s exited (status %d); it will be replaced", self.pid, status)
        self.failures += 1
        self.pid = None
        self._dead = True
        self._gone.set()

    def _reset(self) -> None:
        sock, self._sock = self._sock, None
        self._dead = False
        self._reader = ch.ChannelReader(to_child=False)
        if sock is not None:
            sock.close()

    async def close(self) -> None:
        """Stop the zygote and wait (briefly) until it is reaped; children it forked are not
        affected: they are the supervisor's."""
        pid = self.pid
        self.failures = MAX_FAILURES
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            with anyio.move_on_after(2):
                await self._gone.wait()


class WarmPool:
    """A few children started ahead of time, waiting for a session's ``Configure``.

    ``take`` hands one out (None if none is ready) and starts a refill in the background, so
    ``session/create`` costs one ``Configure``/``Hello`` exchange instead of a fork or an
    interpreter start. Invariant: at most ``size`` warm children exist; dead ones are dropped.
    """

    def __init__(self, size: int, launch: Any, tg: Any) -> None:
        self.size = size
        self._launch = launch
        self._tg = tg
        self._ready: list[Any] = []
        self._filling = False
        self._idle = anyio.Event()  # set while no refill runs
        self._idle.set()
        self._closed = False

    def take(self) -> Any:
        interp = None
        while self._ready and interp is None:
            candidate = self._ready.pop(0)
            if candidate.status is None:
                interp = candidate
            else:
                candidate.dispose()
        self.kick()
        return interp

    def kick(self) -> None:
        if not self._filling and not self._closed and self.size > 0:
            self._filling = True
            self._idle = anyio.Event()
            self._tg.start_soon(self._fill)

    async def _fill(self) -> None:
        try:
            while not self._closed and len(self._ready) < self.size:
                try:
                    interp = await self._launch()
                except Exception as exc:  # noqa: BLE001 - a failed warm start only costs speed
                    log.warning("could not start a warm child: %s", exc)
                    return
                self._ready.append(interp)
        finally:
            self._filling = False
            self._idle.set()

    async def close(self) -> None:
        """Kill every warm child and wait until they are reaped (a refill under way is
        awaited first, so no child it starts is left behind)."""
        self._closed = True
        await self._idle.wait()
        ready, self._ready = self._ready, []
        for interp in ready:
            interp.kill("closed")
        for interp in ready:
            await interp.wait_dispose()
