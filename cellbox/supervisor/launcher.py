"""Starting children, in one place: a warm child, a zygote fork, or a fresh interpreter.

Theory of operation: ``Launcher.start`` gives a session a configured child (``Configure``
sent, ``Hello`` received). It takes a warm child when the session's environment allows it,
else asks the zygote for a fork, else spawns a fresh interpreter with ``spawn_python``, the
one ``posix_spawn`` of the supervisor (an empty signal mask, default dispositions, its own
process group). The rule for what may be forked or pre-warmed is ``forkable``: a session
whose environment changes how an interpreter starts (``PYTHON*``, ``LD_*``, ``MALLOC_*``)
always gets a fresh interpreter, and only sessions without ``env`` take warm children.

Invariants: a child that fails to start is killed and reaped before ``SessionStartFailed``
is raised; at most ``size`` warm children exist; a warm child is handed out once.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable

import anyio
import msgspec

from cellbox.protocol import channel as ch
from cellbox.protocol.errors import SessionStartFailed
from cellbox.supervisor import process
from cellbox.supervisor.cgroups import Cgroups
from cellbox.supervisor.child import Child, Gate, Reaper, _Starting
from cellbox.supervisor.machine import exit_cause

log = logging.getLogger("cellbox.supervisor")

START_TIMEOUT = 30.0


def session_env(session: str, env: dict[str, str] | None, *, only: bool = False) -> dict[str, str]:
    """The child's environment: the server's, the session's ``env`` over it, and markers;
    ``only``: the session's ``env`` instead of the server's (a strict session)."""
    full = {} if only else dict(os.environ)
    full.update(env or {})
    full[process.MARKER] = process.child_marker(session) if session else ""
    full["CELLBOX_PARENT"] = str(os.getpid())
    return full


def forkable(env: dict[str, str] | None) -> bool:
    """False if the session's environment changes how an interpreter starts, which a fork of
    the already-started zygote cannot honour."""
    return not any(k.startswith(("PYTHON", "LD_", "MALLOC_")) for k in env or ())


def _spawn_fresh(env: dict[str, str]) -> process.Started:
    """A fresh interpreter running the child (not contained in a PID namespace)."""
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
        pid = process.spawn_python("cellbox.child.main", env, actions)
    except OSError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        sup_sock.close()
        raise SessionStartFailed(data=f"spawn failed: {exc}") from None
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
        child_sock.close()
    return process.Started(pid, sup_sock, out_r, err_r)


class Launcher:
    def __init__(self, reaper: Reaper, *, zygote: Any = None, gate: Gate | None = None, warm: int = 0,
                 before: Callable[[], None] | None = None, cgroups: Cgroups | None = None) -> None:
        self.reaper = reaper
        self.cgroups = cgroups  # a cgroup per child, where the host lets us
        self.zygote = zygote
        self.gate = gate
        self.pool = WarmPool(warm, self)
        self._before = before  # called before each start (the server starts its helpers then)

    async def launch(self, env: dict[str, str], *, fork: bool = True, strict: ch.Strict | None = None) -> Child:
        """A running child that waits for ``Configure`` (not yet any session's)."""
        zygote = self.zygote
        group = self.cgroups.create() if self.cgroups is not None else None
        forked = None
        if zygote is not None and (fork or zygote.contain or strict):  # a fresh one too, in a namespace
            # A contained child is never started uncontained: wait for a replacement zygote.
            # A contained child joins its cgroups only when its session's limits need them: a
            # move into a v1 cgroup waits for an RCU grace period (10-20 ms), and its PID
            # namespace already takes everything it starts with it.
            joined = group.procs if group is not None and not (zygote.contain or strict) else None
            forked = await zygote.fork(env, fresh=not fork, cgroup=joined, strict=strict,
                                       wait=zygote.contain or strict is not None)
        if forked is None and (strict is not None or (zygote is not None and zygote.contain and zygote.enabled)):
            if group is not None:
                group.remove()
            what = "strict isolation" if strict is not None else "containment"
            raise SessionStartFailed(data=f"{what}: no zygote could fork the child")
        if forked is None:
            forked = _spawn_fresh(env)
            if group is not None:
                try:
                    group.join(forked.pid)  # before it is sent anything of a session's
                except OSError as exc:
                    log.warning("child %d could not join its cgroup: %s", forked.pid, exc)
        pid, sock, out_r, err_r, status_r = forked
        return Child(pid, sock, out_r, err_r, reaper=self.reaper, gate=self.gate,
                     marker=env.get(process.MARKER, ""), status_fd=status_r, cgroup=group)

    async def start(self, configure: ch.Configure, env: dict[str, str] | None,
                    strict: ch.Strict | None = None) -> Child:
        """A configured child for a session (confined as ``strict`` says, if given). Raises
        ``SessionStartFailed`` (with the child's stderr or its error in ``data``) if it cannot
        be started, exits, or does not answer within ``START_TIMEOUT``."""
        if self._before is not None:
            self._before()
        full_env = session_env(configure.session, env, only=strict is not None)
        child = self.pool.take() if not env and strict is None else None
        if child is not None:
            try:
                return await self._configure(child, configure, full_env)
            except SessionStartFailed as exc:  # a warm child can die waiting: start another
                log.info("a warm child could not be configured (%s); starting another", exc.data)
        child = await self.launch(full_env, fork=forkable(env), strict=strict)
        return await self._configure(child, configure, full_env)

    async def _configure(self, child: Child, configure: ch.Configure, full_env: dict[str, str]) -> Child:
        if child.cgroup is not None and configure.limits is not None:
            lim = configure.limits
            try:
                # A contained child's init is in its group too, and not the session's to count.
                extra = 1 if child.init is not None else 0
                child.cgroup.apply(lim.memory_mb, lim.processes and lim.processes + extra, lim.cpu_percent)
                needed = [name for name, want in (("memory", lim.memory_mb), ("pids", lim.processes),
                                                  ("cpu", lim.cpu_percent)) if want]
                if child.init is not None and needed:  # its init first (what it forks follows), then its child
                    child.cgroup.move(child.init, needed)
                    inner = process.child_of_init(child.init)
                    if inner is not None:
                        child.cgroup.move(inner, needed)
                elif lim.cpu_percent:
                    child.cgroup.move(child.pid, ["cpu"])
            except (OSError, ValueError) as exc:
                child.kill()
                raise SessionStartFailed(data=f"the session's limits cannot be set: {exc}") from None
        await configure_child(child, msgspec.structs.replace(configure, env=full_env))
        return child


async def configure_child(child: Child, configure: ch.Configure, timeout: float = START_TIMEOUT) -> None:
    """Send the session's options and wait for ``Hello``. On failure the child is killed and
    ``SessionStartFailed`` raised."""
    starting = child.listener
    assert isinstance(starting, _Starting)
    child.marker = configure.env.get(process.MARKER, "") if configure.env else ""
    try:
        child.send(configure)
        with anyio.fail_after(timeout):
            await starting.event.wait()
        hello = starting.hello
        if hello is None:
            with anyio.move_on_after(2):
                await child.exited.wait()
            child.drain()
            why = exit_cause(child.status) if child.status is not None else "closed its channel"
            text = b"".join(starting.stderr).decode("utf-8", "replace").strip()
            raise SessionStartFailed(data=f"child {why}: {text[-2000:]}")
        if hello.error:
            raise SessionStartFailed(data=hello.error)
        child.python = hello.python
        child.found()
    except BaseException as exc:
        child.kill()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await child.exited.wait()
        child.close()
        if isinstance(exc, TimeoutError):
            raise SessionStartFailed(data=f"child did not start within {timeout} s") from None
        raise


class WarmPool:
    """A few children started ahead of time, waiting for a session's ``Configure``.

    ``take`` hands one out (None if none is ready) and starts a refill in the background, so
    ``session/create`` costs one ``Configure``/``Hello`` exchange instead of a fork or an
    interpreter start. Invariant: at most ``size`` warm children exist; dead ones are dropped.
    """

    def __init__(self, size: int, launcher: Launcher) -> None:
        self.size = size
        self._launcher = launcher
        self._tg: Any = None
        self._ready: list[Child] = []
        self._filling = False
        self._idle = anyio.Event()  # set while no refill runs
        self._idle.set()
        self._closed = False

    def begin(self, tg: Any) -> None:
        """Where refills run; the first one starts at the first ``kick``."""
        self._tg = tg

    def take(self) -> Child | None:
        child = None
        while self._ready and child is None:
            candidate = self._ready.pop(0)
            if candidate.status is None:
                child = candidate
            else:
                candidate.close()
        self.kick()
        return child

    def kick(self) -> None:
        if not self._filling and not self._closed and self.size > 0 and self._tg is not None:
            self._filling = True
            self._idle = anyio.Event()
            self._tg.start_soon(self._fill)

    async def _fill(self) -> None:
        try:
            while not self._closed and len(self._ready) < self.size:
                try:
                    child = await self._launcher.launch(session_env("", None))
                except Exception as exc:  # noqa: BLE001 - a failed warm start only costs speed
                    log.warning("could not start a warm child: %s", exc)
                    return
                self._ready.append(child)
        finally:
            self._filling = False
            self._idle.set()

    async def close(self) -> None:
        """Kill every warm child and wait until they are reaped (a refill under way is
        awaited first, so no child it starts is left behind)."""
        self._closed = True
        await self._idle.wait()
        ready, self._ready = self._ready, []
        for child in ready:
            child.kill()
        for child in ready:
            with anyio.move_on_after(5):
                await child.exited.wait()
            child.close()
