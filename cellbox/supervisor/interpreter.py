"""One child interpreter as the supervisor sees it: a pid, a channel, two output pipes.

Theory of operation: ``Interpreter.start`` spawns the child with ``posix_spawn`` from the main
thread (so ``PR_SET_PDEATHSIG`` in the child watches a thread that lives as long as the
supervisor), writes ``Configure`` and waits, under a deadline, for ``Hello``. Three reader tasks
run in the interpreter's own cancel scope: the channel (editor replies resolve their waiters,
other messages go to the listener) and the stdout/stderr pipes. The ``Reaper`` is the only
caller of ``waitpid``; it reports the exit status.

Invariants: every event reaches the ``Listener`` (the session) on the loop thread: messages,
output bytes, end of channel, exit status. ``dispose`` cancels the reader tasks; descriptors are
closed only after those tasks have ended, and ``drain`` never reads after ``dispose``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup

from cellbox.protocol import channel as ch
from cellbox.protocol.errors import SessionStartFailed
from cellbox.supervisor import process

log = logging.getLogger("cellbox.supervisor")

_BOOT = process.boot_code("cellbox.child.main")
_SIGDEF = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT)
START_TIMEOUT = 30.0


class Reaper:
    """Reaps every child of the supervisor and reports the exit of the ones it watches."""

    def __init__(self) -> None:
        self._watched: dict[int, Callable[[int, Any], None]] = {}
        # Exits of pids nobody watched yet: a forked child can die before its pid is known.
        self._unclaimed: dict[int, tuple[int, Any]] = {}

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


def session_env(session: str, env: dict[str, str] | None) -> dict[str, str]:
    """The child's environment: the server's, the session's ``env`` over it, and markers."""
    full = dict(os.environ)
    full.update(env or {})
    full[process.MARKER] = session
    full["CELLBOX_PARENT"] = str(os.getpid())
    return full


def _forkable(env: dict[str, str] | None) -> bool:
    """False if the session's environment changes how an interpreter starts, which a fork of
    the already-started zygote cannot honour."""
    return not any(k.startswith(("PYTHON", "LD_", "MALLOC_")) for k in env or ())


def _spawn_fresh(env: dict[str, str]) -> tuple[int, socket.socket, int, int]:
    """A fresh interpreter running the child: ``(pid, channel, stdout_r, stderr_r)``."""
    sup_sock, child_sock = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
        (os.POSIX_SPAWN_DUP2, child_sock.fileno(), 3),
    ]
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", _BOOT],
            env,
            file_actions=actions,
            setpgroup=0,
            setsigdef=_SIGDEF,
        )
    except OSError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        sup_sock.close()
        raise SessionStartFailed(data=f"spawn failed: {exc}") from None
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
        child_sock.close()
    return pid, sup_sock, out_r, err_r


class Listener(Protocol):
    """What an interpreter reports to its owner (all called on the event loop thread)."""

    def on_message(self, msg: Any) -> None: ...
    def on_output(self, stream: str, data: bytes) -> None: ...
    def on_eof(self) -> None: ...
    def on_exit(self, status: int) -> None: ...


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

    def on_eof(self) -> None:
        self.event.set()

    def on_exit(self, status: int) -> None:
        self.event.set()


class Interpreter:
    def __init__(self, session: str, pid: int, out_fd: int, err_fd: int) -> None:
        self.session = session
        self.pid = pid
        self.python = ""
        self.status: int | None = None
        self.exited = anyio.Event()
        self.killed_by: str | None = None
        self.channel_eof = False
        self.rusage: Any = None
        self._stream: anyio.abc.SocketStream  # set by launch(); owns the channel socket
        self._fds = {"stdout": out_fd, "stderr": err_fd}
        self._reader = ch.ChannelReader(to_child=False)
        self.listener: Listener = _Starting()
        self.started = time.monotonic()
        self._scope = anyio.CancelScope()
        self._editor_waiters: dict[int, Callable[[Any], None]] = {}
        self._disposed = False

    # -- start -----------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        *,
        tg: TaskGroup,
        reaper: Reaper,
        configure: ch.Configure,
        env: dict[str, str] | None,
        listener: Listener,
        zygote: Any = None,
        timeout: float = START_TIMEOUT,
    ) -> Interpreter:
        """Start a child (forked by ``zygote`` when it can, else a fresh interpreter),
        configure it and wait for its ``Hello``; then events go to ``listener``.

        Raises ``SessionStartFailed`` (with the child's stderr or its error in ``data``) if the
        child cannot be spawned, exits, or does not answer within ``timeout`` seconds.
        """
        full_env = session_env(configure.session, env)
        self = await cls.launch(tg=tg, reaper=reaper, env=full_env, zygote=zygote if _forkable(env) else None)
        await self.configure(msgspec.structs.replace(configure, env=full_env), listener, timeout)
        return self

    @classmethod
    async def launch(cls, *, tg: TaskGroup, reaper: Reaper, env: dict[str, str], zygote: Any = None) -> Interpreter:
        """A running child that waits for ``Configure`` (a warm child, when no session yet)."""
        forked = await zygote.fork(env) if zygote is not None else None
        if forked is not None:
            pid, sup_sock, out_r, err_r = forked
        else:
            pid, sup_sock, out_r, err_r = _spawn_fresh(env)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        sup_sock.setblocking(False)
        self = cls(env.get(process.MARKER, ""), pid, out_r, err_r)
        # A stream keeps the socket registered with the loop (no epoll changes per message).
        self._stream = await anyio.abc.SocketStream.from_socket(sup_sock)
        reaper.watch(pid, self._exited)
        tg.start_soon(self._run)
        return self

    async def configure(self, configure: ch.Configure, listener: Listener, timeout: float = START_TIMEOUT) -> None:
        """Send the session's options and wait for ``Hello``; then events go to ``listener``.
        On failure the child is killed and ``SessionStartFailed`` raised."""
        starting = self.listener
        assert isinstance(starting, _Starting)
        self.session = configure.session
        try:
            await self.send(configure)
            with anyio.fail_after(timeout):
                await starting.event.wait()
            hello = starting.hello
            if hello is None:
                with anyio.move_on_after(2):
                    await self.exited.wait()
                self.drain()
                why = process.exit_cause(self.status) if self.status is not None else "closed its channel"
                text = b"".join(starting.stderr).decode("utf-8", "replace").strip()
                raise SessionStartFailed(data=f"child {why}: {text[-2000:]}")
            if hello.error:
                raise SessionStartFailed(data=hello.error)
            self.python = hello.python
        except BaseException as exc:
            self.kill("start")
            with anyio.CancelScope(shield=True):
                await self.wait_dispose()
            if isinstance(exc, TimeoutError):
                raise SessionStartFailed(data=f"child did not start within {timeout} s") from None
            raise
        self.listener = listener

    # -- reading ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read_channel)
                    for stream in ("stdout", "stderr"):
                        tg.start_soon(self._read_pipe, stream)
        finally:
            # Only now, with no task waiting on them, may the descriptors be closed.
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _read_channel(self) -> None:
        while True:
            try:
                data = await self._stream.receive(1 << 16)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                data = b""
            if not data:
                self.channel_eof = True
                self.listener.on_eof()
                return
            try:
                msgs = self._reader.feed(data)
            except ch.ChannelError as exc:
                log.error("child %d: corrupt channel (%s); killing it", self.pid, exc)
                self.kill("corrupt channel")
                self.channel_eof = True
                self.listener.on_eof()
                return
            for msg in msgs:
                waiter = None
                if isinstance(msg, ch.CompleteReply | ch.InspectReply):
                    waiter = self._editor_waiters.pop(msg.id, None)
                if waiter is not None:
                    waiter(msg)
                else:
                    self.listener.on_message(msg)

    async def _read_pipe(self, stream: str) -> None:
        fd = self._fds[stream]
        while True:
            await anyio.wait_readable(fd)
            if not self._read_once(stream, fd):
                return

    def _read_once(self, stream: str, fd: int) -> bool:
        """Read what is there; False at end of file."""
        try:
            data = os.read(fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self.listener.on_output(stream, data)
        return True

    def drain(self) -> None:
        """Deliver everything already in the output pipes (call before reporting a result)."""
        if self._disposed:
            return
        for stream, fd in self._fds.items():
            for _ in range(1024):  # bounded: a child writing fast must not starve the loop
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, InterruptedError, OSError):
                    break
                if not data:
                    break
                self.listener.on_output(stream, data)

    # -- writing ---------------------------------------------------------------------------

    async def send(self, msg: ch.Msg) -> None:
        try:
            await self._stream.send(ch.encode(msg))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the child is gone; its exit is reported to the listener

    def expect_editor_reply(self, msg_id: int, callback: Callable[[Any], None]) -> None:
        self._editor_waiters[msg_id] = callback

    # -- signals and exit ------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, sig)
            except OSError:
                pass

    def kill(self, reason: str) -> None:
        """Kill the child, its process group and all its descendants; ``reason`` is reported."""
        if self.killed_by is None:
            self.killed_by = reason
        roots = [self.pid] if self.status is None else []
        process.kill_tree(roots + process.orphans(self.session, roots))

    def _exited(self, status: int, rusage: Any) -> None:
        self.rusage = rusage
        self.status = status
        self.exited.set()
        self.listener.on_exit(status)

    async def wait_dispose(self) -> None:
        """Wait for the exit, deliver the remaining output, then release every resource."""
        await self.exited.wait()
        self.drain()
        self.dispose()

    def dispose(self) -> None:
        if self._disposed:
            return
        self._disposed = True
        self._scope.cancel()
        for waiter in self._editor_waiters.values():
            waiter(None)
        self._editor_waiters.clear()

    def cpu_used(self) -> float:
        """CPU seconds the child used (known once it has been reaped)."""
        r = self.rusage
        return (r.ru_utime + r.ru_stime) if r is not None else 0.0

    def rss(self) -> int | None:
        return process.rss_bytes(self.pid if self.status is None else None)


def monotonic() -> float:
    return time.monotonic()
