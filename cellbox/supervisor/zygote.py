"""The supervisor's side of the zygote: start it, ask it for children, replace it if it fails.

Theory of operation: ``start`` spawns the zygote (``cellbox.child.zygote``) in the background
with a SOCK_SEQPACKET control socket; it becomes *current* once it has announced itself.
``fork`` sends ``Spawn`` with the new child's four descriptors attached and waits for
``Spawned`` with the child's pid; requests are serialised by a lock, so replies match
requests. A zygote fails when it dies, or when it does not answer a fork within
``FORK_TIMEOUT`` (stopped, stuck, starved): it is killed, and a replacement starts in the
background. Whenever no zygote is current ``fork`` returns None at once and the caller starts
a fresh interpreter, except while the *first* zygote starts, which ``fork`` waits for (up to
``START_WAIT``): a fork then still beats a cold start.

Invariants: at most one zygote is current, and at most one is starting; each zygote process
counts as at most one failure, and after ``MAX_FAILURES`` the zygote is disabled for the
server's life; every zygote process is killed and reaped by ``close``.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

import anyio
from anyio.abc import TaskGroup

from cellbox.protocol import channel as ch
from cellbox.protocol.errors import SessionStartFailed
from cellbox.supervisor.process import Started, boot_code, spawn_python

log = logging.getLogger("cellbox.supervisor")

MAX_FAILURES = 3
START_TIMEOUT = 10.0  # for a zygote to announce itself (in the background); then another is tried
WAIT_LIMIT = 30.0  # how long a contained child waits for a replacement zygote
START_WAIT = 5.0  # how long a fork waits for the first zygote to be ready
FORK_TIMEOUT = 1.0  # a ready zygote answers a fork in milliseconds



class _Process:
    """One zygote process: its control socket and whether it has failed."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.reader = ch.ChannelReader(to_child=False)
        self.failed = False
        self.gone = anyio.Event()  # set once it has been reaped


class Zygote:
    def __init__(self, reaper: Any, *, contain: bool = False) -> None:
        self.reaper = reaper
        self.contain = contain  # fork each child into a PID namespace of its own
        self.failures = 0
        self.forks = 0
        self._current: _Process | None = None
        self._procs: list[_Process] = []  # started and not reaped yet
        self._tg: TaskGroup | None = None
        self._starting = False
        self._first = anyio.Event()  # set once the first start has ended (ready or not)
        self._ready = anyio.Event()  # set while a zygote is ready
        self._lock = anyio.Lock()
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.failures < MAX_FAILURES and not self._closed

    @property
    def pid(self) -> int | None:
        """The current zygote's pid (None while none is ready)."""
        return self._current.pid if self._current is not None else None

    def start(self, tg: TaskGroup) -> None:
        """Start the zygote in the background of ``tg`` (at server start); replacements
        start there too."""
        self._tg = tg
        self._kick()

    def _kick(self) -> None:
        if self._tg is not None and not self._starting and self._current is None and self.enabled:
            self._starting = True
            self._tg.start_soon(self._keep)

    async def _keep(self) -> None:
        """Start zygotes until one is ready, the zygote is disabled or closed."""
        try:
            while self.enabled and self._current is None:
                proc = None
                try:
                    proc = self._spawn()
                    with anyio.fail_after(START_TIMEOUT):
                        hello = await self._receive(proc)
                    if hello.pid != proc.pid:
                        raise OSError(f"zygote announced pid {hello.pid}, expected {proc.pid}")
                except (OSError, TimeoutError, ch.ChannelError, anyio.ClosedResourceError) as exc:
                    log.warning("zygote failed to start (%s); sessions start fresh meanwhile", exc)
                    if proc is not None:
                        self._fail(proc)
                    else:
                        self.failures += 1
                    continue
                if proc.failed or not self.enabled:
                    continue  # it died while starting, or close() came
                log.info("zygote %d ready", proc.pid)
                self._current = proc
                self._ready.set()
        finally:
            self._starting = False
            self._first.set()

    def _spawn(self) -> _Process:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Only what an interpreter needs to start: a forked child's /proc/self/environ is this
        # block whatever its session's environment is, and a strict session must not read the
        # server's secrets there (a session gets its own environment when it is configured).
        zenv = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ") or k.startswith(("LC_", "PYTHON", "LD_", "CELLBOX_"))}
        zenv["CELLBOX_PARENT"] = str(os.getpid())
        try:
            pid = spawn_python(
                "cellbox.child.zygote",
                zenv,
                [
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        proc = _Process(pid, ours)
        self._procs.append(proc)
        self.reaper.watch(pid, lambda status, rusage: self._exited(proc, status))
        return proc

    async def fork(self, env: dict[str, str], *, fresh: bool = False, cgroup: list[str] | None = None,
                   strict: ch.Strict | None = None, wait: bool = False) -> Started | None:
        """A new child forked from the zygote (in a PID namespace of its own if ``contain``
        and the zygote can), or None if no zygote can serve now (the caller then spawns a
        fresh interpreter). ``fresh``: the fork executes a fresh interpreter (only when
        ``contain``: that is what the namespace is for). Takes at most ``FORK_TIMEOUT``
        seconds once a zygote is ready. ``wait``: when the zygote is stuck or gone, wait (up
        to ``WAIT_LIMIT``, time for a stuck replacement to be replaced in turn) instead of
        returning None (a contained child must not be started any other way)."""
        deadline = anyio.current_time() + (WAIT_LIMIT if wait else START_WAIT)
        while self.enabled:
            if self._current is None:
                self._kick()
                if self._first.is_set() and not wait:
                    return None  # a replacement is starting: do not wait for it
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    await self._ready.wait()
            async with self._lock:
                proc = self._current
                if proc is not None and not proc.failed:
                    try:
                        with anyio.fail_after(FORK_TIMEOUT):
                            return await self._fork(proc, env, fresh, cgroup or [], strict)
                    except (OSError, TimeoutError, ch.ChannelError, anyio.ClosedResourceError) as exc:
                        if not proc.failed:
                            why = f"no answer within {FORK_TIMEOUT} s" if isinstance(exc, TimeoutError) else exc
                            log.warning("zygote %d did not fork (%s); replacing it", proc.pid, why)
                            self._fail(proc)
            if not wait or anyio.current_time() >= deadline:
                log.warning("no zygote could fork in time")
                return None
            await anyio.sleep(0.02)  # a replacement is on its way
        return None

    async def _fork(self, proc: _Process, env: dict[str, str], fresh: bool, cgroup: list[str],
                    strict: ch.Strict | None) -> Started:
        sup_sock, child_sock = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY)
        theirs = [devnull, out_w, err_w, child_sock.fileno(), status_w]
        try:
            argv = [sys.executable, "-c", boot_code("cellbox.child.main")] if fresh else None
            frame = ch.encode(ch.Spawn(env=env, contain=self.contain, argv=argv, cgroup=cgroup, strict=strict))
            await anyio.wait_writable(proc.sock)
            proc.sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", theirs))])
            reply = await self._receive(proc)
        except BaseException:
            for fd in (out_r, err_r, status_r):
                os.close(fd)
            sup_sock.close()
            raise
        finally:
            for fd in (devnull, out_w, err_w, status_w):
                os.close(fd)
            child_sock.close()
        if reply.pid <= 0:
            for fd in (out_r, err_r, status_r):
                os.close(fd)
            sup_sock.close()
            if reply.error is not None:  # the zygote is fine; this child cannot be made
                raise SessionStartFailed(data=reply.error)
            raise OSError("the zygote could not fork")
        self.forks += 1
        if not reply.contained:
            os.close(status_r)
            return Started(reply.pid, sup_sock, out_r, err_r)
        return Started(reply.pid, sup_sock, out_r, err_r, status_r)

    async def _receive(self, proc: _Process) -> ch.Spawned:
        while True:
            if proc.failed:
                raise OSError("the zygote exited")
            await anyio.wait_readable(proc.sock)
            try:
                data = proc.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise OSError("the zygote closed its control socket")
            for msg in proc.reader.feed(data):
                if isinstance(msg, ch.Spawned):
                    return msg

    def _fail(self, proc: _Process) -> None:
        """Count ``proc``'s failure (once), kill it and start a replacement."""
        if proc.failed:
            return
        proc.failed = True
        if not self._closed:
            self.failures += 1
        if self._current is proc:
            self._current = None
            self._ready = anyio.Event()
        try:
            os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: the pid is still ours
        except OSError:
            pass
        self._kick()

    def _exited(self, proc: _Process, status: int) -> None:
        if not proc.failed and not self._closed:
            log.warning("zygote %d exited (status %d); it will be replaced", proc.pid, status)
        self._fail(proc)
        anyio.notify_closing(proc.sock)  # a task waiting on it gets ClosedResourceError
        # Closed a little later: closed now, its number could go at once to the replacement's
        # socket while the loop still holds the old registration, and the replacement's
        # announcement would never be seen (it then waited START_TIMEOUT for nothing).
        asyncio.get_running_loop().call_later(0.5, proc.sock.close)
        self._procs.remove(proc)
        proc.gone.set()

    async def close(self) -> None:
        """Stop every zygote process and wait (briefly) until each is reaped; children they
        forked are not affected: they are the supervisor's."""
        self._closed = True
        procs = list(self._procs)
        for proc in procs:
            self._fail(proc)
        with anyio.move_on_after(2):
            for proc in procs:
                await proc.gone.wait()
