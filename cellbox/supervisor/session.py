"""A session's I/O shell: drives its ``SessionMachine`` and performs the effects.

Theory of operation: every request and every event of the session's children becomes one
call on the machine with the loop's time, followed by ``_pump``, which performs the effects
in order: it starts children (a task per start), writes to them, signals and kills them,
sends notifications and answers. Nothing waits on the common path: an eval on an idle
session is written to the child from the request reader's own call, and the ``Done`` read
by the child's channel callback answers it from there. The machine's ``deadline`` is kept
armed as one loop timer (moved earlier when needed, never woken for later deadlines).

Invariants: the machine is only called from the loop thread, and ``_pump`` runs until the
machine has no effects left (effects may feed the machine again: a kill delivers the killed
child's last output and ``child_killed``); every ``Answer`` calls the eval's ``on_answer``
callbacks exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import anyio

from cellbox.protocol import channel as ch
from cellbox.protocol.errors import SessionNotFound, SessionStartFailed
from cellbox.protocol.messages import DetectionPolicy, Display, Limits, SessionInfo
from cellbox.supervisor import machine as mc
from cellbox.supervisor.child import Child
from cellbox.supervisor.stats import Stats

log = logging.getLogger("cellbox.supervisor")


@dataclass
class Settings:
    """Effective options of one session: server defaults overlaid with its ``Limits``."""

    timeout: float | None
    grace: float
    output_bytes: int
    limits: Limits
    detection: DetectionPolicy | None
    ast_cache_size: int | None
    cwd: str | None
    env: dict[str, str] | None
    strict: ch.Strict | None = None  # a strict session's confinement


class Outlet(Protocol):
    """Where a session's notifications go (the server's outbox)."""

    def output(self, session: str, request_id: Any, stream: str, text: str) -> None: ...
    def display(self, session: str, request_id: Any, display: Display) -> None: ...
    def input_request(self, session: str, request_id: Any, prompt: str, password: bool, prompt_id: int) -> None: ...


class Starter(Protocol):
    async def start(self, configure: ch.Configure, env: dict[str, str] | None,
                    strict: ch.Strict | None = None) -> Child: ...


class _Listener:
    """Routes one child's events to the machine, tagged with its generation."""

    __slots__ = ("session", "gen")

    def __init__(self, session: Session, gen: int) -> None:
        self.session, self.gen = session, gen

    def on_message(self, msg: Any) -> None:
        s = self.session
        s.machine.child_message(self.gen, msg, s._loop.time())
        s._pump()

    def on_output(self, stream: str, data: bytes) -> None:
        s = self.session
        s.machine.child_output(self.gen, stream, data, s._loop.time())
        s._pump()

    def on_channel_closed(self, corrupt: bool) -> None:
        s = self.session
        s.machine.channel_closed(self.gen, corrupt, s._loop.time())
        s._pump()

    def on_exit(self, status: int, cpu_used: float) -> None:
        s = self.session
        child = s.children.get(self.gen)
        oom = child.oom_killed if child is not None else None
        s.machine.child_exited(self.gen, status, s._loop.time(), cpu_used, oom)
        s.children.pop(self.gen, None)
        s._pump()


class Session:
    def __init__(self, sid: str, name: str | None, settings: Settings, *, starter: Starter, outlet: Outlet,
                 stats: Stats, tg: Any) -> None:
        self.id = sid
        self.name = name
        self.settings = settings
        self.created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.machine = mc.SessionMachine(
            mc.Config(
                timeout=settings.timeout,
                grace=settings.grace,
                output_bytes=settings.output_bytes,
                cpu_seconds=settings.limits.cpu_seconds,
            )
        )
        self.children: dict[int, Child] = {}
        self.workdir = settings.cwd or ""  # its child's cwd, where session/*File work
        self.workdir_fd = -1  # a descriptor of it, held while the session is open
        self.owns_workdir = False  # made for it: removed when it closes
        self.leases: list[int] = []  # descriptors holding what is its alone (a strict uid)
        self._starter = starter
        self._outlet = outlet
        self._stats = stats
        self._tg = tg
        self._loop = asyncio.get_running_loop()
        self._ready: dict[int, anyio.Event] = {}
        self._start_errors: dict[int, str] = {}
        self._pumping = False
        self._alarm_at = math.inf
        self._alarm: asyncio.TimerHandle | None = None
        self._editor_ids = 0

    # -- state -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.machine.closed is not None

    async def in_workdir(self, fn: Any, *args: Any) -> Any:
        """``fn(workdir_fd, *args)`` in a worker thread, on a descriptor of its own (so a
        close meanwhile cannot hand it a reused number)."""
        fd = os.dup(self.workdir_fd)
        try:
            return await anyio.to_thread.run_sync(fn, fd, *args)
        finally:
            os.close(fd)

    @property
    def file_owner(self) -> tuple[int, int] | None:
        """The ids a file put in its work directory gets (a strict session's own), if any."""
        strict = self.settings.strict
        return (strict.uid, strict.gid) if strict is not None else None

    @property
    def child(self) -> Child | None:
        """The live child (None while one starts or when there is none)."""
        gen = self.machine.live_gen
        return self.children.get(gen) if gen is not None else None

    def info(self) -> SessionInfo:
        child = self.child
        return SessionInfo(
            session=self.id,
            name=self.name,
            state=self.machine.state.value,  # type: ignore[arg-type]
            pid=child.pid if child is not None else None,
            execution_count=self.machine.execution_count,
            created_at=self.created_at,
            rss_bytes=child.rss() if child is not None else None,
            workdir=self.workdir,
        )

    # -- requests --------------------------------------------------------------------------

    async def start(self) -> Child:
        """Start the first child; raises ``SessionStartFailed``."""
        gen = self.machine.start()
        self._pump()
        return await self._until_ready(gen)

    def submit(self, ev: mc.Eval) -> None:
        self.machine.submit(ev, self._loop.time())
        self._pump()

    def interrupt(self, ev: mc.Eval | None = None) -> bool:
        """Interrupt ``ev`` (None: the running eval); True iff one was hit."""
        hit = self.machine.interrupt(ev, self._loop.time())
        self._pump()
        return hit

    def send_input(self, ev: mc.Eval, text: str | None, prompt_id: int | None = None) -> bool:
        ok = self.machine.send_input(ev, text, prompt_id)
        self._pump()
        return ok

    async def close(self, cause: str = "closed") -> None:
        """Answer every eval, kill the child and its descendants, wait (bounded) for the
        exit; the session is gone."""
        self.machine.close(cause, self._loop.time())
        self._pump()
        if self._alarm is not None:
            self._alarm.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            for child in list(self.children.values()):
                await child.exited.wait()

    async def restart(self) -> Child:
        """A fresh child with an empty namespace; running and queued evals get ``restart``."""
        gen = self.machine.restart(self._loop.time())
        self._pump()
        return await self._until_ready(gen)

    async def editor_request(self, kind: type, code: str, cursor: int, wait: float = 5.0) -> Any:
        """Ask the live child to complete or inspect; None if there is none or it cannot
        answer within ``wait`` s (e.g. it is busy in synchronous code)."""
        child = self.child
        if child is None:
            return None
        self._editor_ids += 1
        got = anyio.Event()
        box: list[Any] = []

        def receive(msg: Any) -> None:
            box.append(msg)
            got.set()

        child.expect_editor_reply(self._editor_ids, receive)
        child.send(kind(id=self._editor_ids, code=code, cursor=cursor))
        with anyio.move_on_after(wait):
            await got.wait()
        return box[0] if box else None

    # -- effects ---------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return  # the outer pump takes what this call added
        self._pumping = True
        try:
            while effects := self.machine.take():
                for effect in effects:
                    self._perform(effect)
        finally:
            self._pumping = False
        self._arm()

    def _perform(self, effect: mc.Effect) -> None:
        match effect:
            case mc.Send(gen=gen, msg=msg):
                child = self.children.get(gen)
                if child is not None:
                    child.send(msg)
            case mc.Output(ev=ev, request_id=rid, stream=stream, text=text):
                if ev is None or ev.notify:
                    self._outlet.output(self.id, rid, stream, text)
                if ev is not None and ev.sink is not None:
                    ev.sink(stream, text)
            case mc.Answer(ev=ev, result=result, counters=counters):
                self._stats.count_eval(result.status)
                if result.status == "killed" and result.cause:
                    self._stats.count_kill(result.cause)
                    log.info("session %s: request %r killed: %s", self.id, ev.request_id, result.cause)
                if counters:
                    self._stats.count_detections(counters)
                for callback in ev.on_answer:
                    callback(ev)
            case mc.Wake(gen=gen):
                child = self.children.get(gen)
                if child is not None:
                    child.wake()
            case mc.Kill(gen=gen):
                child = self.children.get(gen)
                if child is not None:
                    child.kill()
                    child.drain()  # its last words, for its eval's answer
                self.machine.child_killed(gen, self._loop.time())
            case mc.Spawn(gen=gen):
                if gen > 1:
                    self._stats.respawned += 1
                self._ready[gen] = anyio.Event()
                self._tg.start_soon(self._spawn, gen)
            case mc.Show(ev=ev, request_id=rid, display=display):
                if ev is None or ev.notify:
                    self._outlet.display(self.id, rid, display)
            case mc.AskInput(ev=ev, prompt=prompt, password=password, prompt_id=prompt_id):
                if ev.notify:
                    self._outlet.input_request(self.id, ev.request_id, prompt, password, prompt_id)

    async def _spawn(self, gen: int) -> None:
        s = self.settings
        configure = ch.Configure(
            session=self.id, detection=s.detection, ast_cache_size=s.ast_cache_size, limits=s.limits, cwd=s.cwd
        )
        try:
            child = await self._starter.start(configure, s.env, s.strict)
        except SessionStartFailed as exc:
            self._start_errors[gen] = str(exc.data)
            self.machine.child_start_failed(gen, str(exc.data), self._loop.time())
        except Exception as exc:  # a bug must not leave the eval waiting for its child
            log.exception("session %s: starting a child failed", self.id)
            self._start_errors[gen] = f"{type(exc).__name__}: {exc}"
            self.machine.child_start_failed(gen, self._start_errors[gen], self._loop.time())
        else:
            self.children[gen] = child
            child.listener = _Listener(self, gen)
            self.machine.child_ready(gen, child.pid, child.python, self._loop.time())
            if child.status is not None:  # it died between its Hello and now
                child.listener.on_exit(child.status, child.cpu_used)
        finally:
            self._pump()
            self._ready.pop(gen).set()

    async def _until_ready(self, gen: int) -> Child:
        """The child of generation ``gen`` once it is ready, or of the latest generation if
        a restart replaced it meanwhile (a second restart satisfies the first). Raises
        ``SessionNotFound`` if the session was closed meanwhile, ``SessionStartFailed`` if
        the child did not start."""
        while True:
            event = self._ready.get(gen)
            if event is not None:
                await event.wait()
            if self.closed:
                raise SessionNotFound(data=f"session {self.id} was closed ({self.machine.closed}) as it started")
            latest = self.machine.child.gen if self.machine.child is not None else gen
            if latest <= gen:
                break
            gen = latest
        child = self.children.get(gen)
        if child is None or self.machine.live_gen != gen:
            raise SessionStartFailed(data=self._start_errors.pop(gen, "the child died as it started"))
        return child

    # -- the clock -------------------------------------------------------------------------

    def _arm(self) -> None:
        deadline = self.machine.deadline
        if deadline < self._alarm_at:
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm_at = deadline
            self._alarm = self._loop.call_at(deadline, self._on_alarm)

    def _on_alarm(self) -> None:
        self._alarm, self._alarm_at = None, math.inf
        self.machine.tick(self._loop.time())
        self._pump()
