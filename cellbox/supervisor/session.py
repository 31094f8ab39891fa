"""A session: one child interpreter at a time, an ordered queue of evals, honest outcomes.

Theory of operation: ``submit`` appends an eval to the queue; the session's worker task takes
evals one at a time, makes sure a live child exists (spawning one lazily after a death), sends
``Exec`` and waits for ``Done``, the child's exit, or the ladder's deadline. Output bytes from
the child's pipes are routed, as they arrive, to the running eval (capped per stream) or, when
idle, streamed under the last eval's request id. Interrupts, closes and restarts act on the
running eval through the child (signal or kill); the worker then reports what happened.

Invariants:
- every submitted eval is answered exactly once (``PendingEval.finish``), whatever happens;
- ``stateLost`` is true iff the namespace the eval ran against (or the one the client had
  before it) is gone: the child was killed or died;
- a session never blocks another session or the server: all waits are on the loop.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import anyio

from cellbox.protocol import channel as ch
from cellbox.protocol.errors import SessionStartFailed
from cellbox.protocol.messages import (
    DetectionPolicy,
    Display,
    ErrorInfo,
    EvalParams,
    EvalResult,
    Limits,
    SessionInfo,
    Truncated,
)
from cellbox.supervisor import process
from cellbox.supervisor.interpreter import Interpreter
from cellbox.supervisor.ladder import Ladder
from cellbox.supervisor.output import StreamCap

if TYPE_CHECKING:
    from cellbox.supervisor.server import Server

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


class PendingEval:
    """One ``session/eval`` request from arrival to its one answer."""

    def __init__(
        self,
        key: Any,
        request_id: Any,
        params: EvalParams,
        on_output: Callable[[str, str], None] | None = None,
        *,
        notify: bool = True,
    ) -> None:
        self.key = key
        self.request_id = request_id
        self.params = params
        self.state = "queued"  # queued -> running -> done
        self.result: EvalResult | None = None
        self.finished = anyio.Event()
        self.no_reply = False  # MCP notifications/cancelled: answer nobody
        self.on_output = on_output
        self.notify = notify  # send session/output and session/display (not for MCP tool calls)
        self.on_finish: list[Callable[[], None]] = []  # called once, when answered
        self.interrupt_requested = False

    def finish(self, result: EvalResult) -> None:
        if self.state == "done":
            return
        self.state = "done"
        self.result = result
        self.finished.set()
        for callback in self.on_finish:
            callback()


@dataclass
class _Run:
    """Bookkeeping of the eval the child is running."""

    pe: PendingEval
    cell_id: int
    ladder: Ladder
    started: float
    caps: dict[str, StreamCap]
    collect: bool
    out: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    displays: list[Display] = field(default_factory=list)
    done: ch.Done | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)
    sent: bool = False  # the Exec is written: a SIGINT now reaches this cell, not an idle child


class Session:
    def __init__(self, server: Server, sid: str, name: str | None, settings: Settings) -> None:
        self.server = server
        self.id = sid
        self.name = name
        self.settings = settings
        self.interp: Interpreter | None = None
        self.execution_count = 0
        self.created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.closed = False
        self._queue: deque[PendingEval] = deque()
        self._wake = anyio.Event()
        self._run: _Run | None = None
        self._last_request_id: Any = None
        self._notify_idle = True  # whether output between evals is sent (as the last eval's)
        self._cell_ids = 0
        self._lost: str | None = None  # the child died while idle: the next eval says so
        self._spawn_lock = anyio.Lock()
        self._editor_ids = 0

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.interp is None or self.interp.status is not None:
            return "dead"
        return "busy" if self._run is not None or self._queue else "idle"

    def info(self) -> SessionInfo:
        interp = self.interp
        return SessionInfo(
            session=self.id,
            name=self.name,
            state=self.state,  # type: ignore[arg-type]
            pid=interp.pid if interp is not None and interp.status is None else None,
            execution_count=self.execution_count,
            created_at=self.created_at,
            rss_bytes=interp.rss() if interp is not None else None,
        )

    # -- child lifecycle -------------------------------------------------------------------

    async def ensure_child(self) -> Interpreter:
        """A live child for this session, spawning one if there is none (or it died)."""
        interp = self.interp
        if interp is not None and interp.status is None and interp.killed_by is None:
            return interp  # the common case, without taking the lock
        async with self._spawn_lock:
            interp = self.interp
            if interp is not None and interp.status is None and interp.killed_by is None:
                return interp
            if interp is not None:
                self.server.stats.respawned += 1
                interp.kill(interp.killed_by or "replaced")
                with anyio.move_on_after(5):
                    await interp.wait_dispose()
            s = self.settings
            configure = ch.Configure(
                session=self.id,
                detection=s.detection,
                ast_cache_size=s.ast_cache_size,
                limits=s.limits,
                cwd=s.cwd,
            )
            self.interp = await self.server.spawn(configure, s.env, self)
            return self.interp

    # -- Listener (called by the interpreter) ----------------------------------------------

    def on_message(self, msg: Any) -> None:
        run = self._run
        if isinstance(msg, ch.Done):
            if run is not None and msg.id == run.cell_id:
                run.done = msg
                run.wake.set()
        elif isinstance(msg, ch.DisplayEvent):
            if self.interp is not None:
                self.interp.drain()  # output printed before the display goes first
            current = run is not None and msg.id == run.cell_id
            if current and run.collect:
                run.displays.append(msg.display)
            if run.pe.notify if current else self._notify_idle:
                rid = run.pe.request_id if current else self._last_request_id
                self.server.notify_display(self, rid, msg.display)
        elif isinstance(msg, ch.InputRequest):
            if run is not None:
                self.server.notify_input_request(self, run.pe.request_id, msg.prompt, msg.password)

    def on_output(self, stream: str, data: bytes) -> None:
        run = self._run
        if run is None:
            if self._notify_idle:
                text = data.decode("utf-8", "replace")
                self.server.notify_output(self, self._last_request_id, stream, text)
            return
        text = run.caps[stream].feed(data)
        if text:
            self._emit(run, stream, text)

    def on_eof(self) -> None:
        if self._run is not None:
            self._run.wake.set()

    def on_exit(self, status: int) -> None:
        if self._run is not None:
            self._run.wake.set()
        elif not self.closed and self.interp is not None and self.interp.killed_by is None:
            self._lost = process.exit_cause(status)
            log.warning("session %s: child died while idle (%s)", self.id, self._lost)

    def _emit(self, run: _Run, stream: str, text: str) -> None:
        if run.collect:
            run.out[stream].append(text)
        if run.pe.notify:
            self.server.notify_output(self, run.pe.request_id, stream, text)
        if run.pe.on_output is not None:
            run.pe.on_output(stream, text)

    # -- queue -----------------------------------------------------------------------------

    def submit(self, pe: PendingEval) -> None:
        self._queue.append(pe)
        self._wake.set()

    def find(self, key: Any) -> PendingEval | None:
        if self._run is not None and self._run.pe.key == key:
            return self._run.pe
        for pe in self._queue:
            if pe.key == key:
                return pe
        return None

    def interrupt(self, pe: PendingEval | None = None) -> bool:
        """Interrupt the running eval (or ``pe``: dropped if queued). True iff one was hit."""
        run = self._run
        if pe is None:
            if run is None:
                return False
            pe = run.pe
        if pe.state == "queued":
            try:
                self._queue.remove(pe)
            except ValueError:
                return False
            pe.finish(_dropped("interrupted", "interrupt"))
            self.server.stats.count_eval("interrupted")
            return True
        if pe.state != "running":
            return False
        pe.interrupt_requested = True
        if run is None or run.pe is not pe:
            return True  # its child is still starting: _execute stops it before it runs
        if run.ladder.interrupt(time.monotonic()) == "sigint" and run.sent:
            self._sigint()
        # else: _execute signals as soon as the Exec is written
        run.wake.set()
        return True

    def _sigint(self) -> None:
        if self.interp is not None:
            self.interp.signal(signal.SIGINT)

    def _drop_queued(self, cause: str) -> None:
        while self._queue:
            pe = self._queue.popleft()
            pe.finish(_dropped("killed", cause, state_lost=True))
            self.server.stats.count_eval("killed")

    async def close(self, cause: str = "closed") -> None:
        """Kill the child and its descendants; answer every eval; the session is gone."""
        self.closed = True
        self._drop_queued(cause)
        self._wake.set()
        interp = self.interp
        if interp is not None:
            interp.kill(cause)
            with anyio.CancelScope(shield=True):
                await interp.wait_dispose()

    async def restart(self) -> Interpreter:
        """A fresh child with an empty namespace; running and queued evals get ``restart``."""
        self._drop_queued("restart")
        interp = self.interp
        if interp is not None:
            interp.kill("restart")
            await interp.wait_dispose()
        if self._run is not None:  # let the worker answer the eval the kill stopped
            await self._run.pe.finished.wait()
        self.execution_count = 0
        self._lost = None
        return await self.ensure_child()

    async def editor_request(self, kind: type, code: str, cursor: int, wait: float = 5.0) -> Any:
        """Ask the child to complete or inspect; None if it cannot answer within ``wait`` s
        (e.g. it is busy in synchronous code)."""
        interp = await self.ensure_child()
        self._editor_ids += 1
        got = anyio.Event()
        box: list[Any] = []

        def receive(msg: Any) -> None:
            box.append(msg)
            got.set()

        interp.expect_editor_reply(self._editor_ids, receive)
        await interp.send(kind(id=self._editor_ids, code=code, cursor=cursor))
        with anyio.move_on_after(wait):
            await got.wait()
        return box[0] if box else None

    # -- worker ----------------------------------------------------------------------------

    async def run(self) -> None:
        """The session's worker: evals one at a time, in arrival order, until closed."""
        while True:
            while not self._queue and not self.closed:
                await self._wake.wait()
                self._wake = anyio.Event()
            if self.closed:
                self._drop_queued("closed")
                return
            pe = self._queue.popleft()
            try:
                await self._execute(pe)
            except Exception:  # a bug here must not lose the answer or the session
                log.exception("session %s: internal error in eval", self.id)
                pe.finish(_dropped("killed", "internal error", state_lost=True))
                if self.interp is not None:
                    self.interp.kill("internal error")

    async def _execute(self, pe: PendingEval) -> None:
        params = pe.params
        pe.state = "running"
        self._last_request_id = pe.request_id
        self._notify_idle = pe.notify
        try:
            interp = await self.ensure_child()
        except SessionStartFailed as exc:
            pe.finish(
                EvalResult(
                    status="killed",
                    execution_count=None,
                    error=ErrorInfo(type="SessionStartFailed", message=str(exc.data), traceback=""),
                    state_lost=True,
                    cause="start failed",
                )
            )
            self.server.stats.count_eval("killed")
            return
        lost, self._lost = self._lost, None
        if pe.interrupt_requested:  # interrupted while its child was starting: never ran
            pe.finish(_dropped("interrupted", "interrupt", state_lost=lost is not None))
            self.server.stats.count_eval("interrupted")
            return
        timeout = self.settings.timeout if params.timeout is None else params.timeout
        timeout = timeout or None
        count = self.execution_count + 1
        if not params.silent:
            self.execution_count = count
        self._cell_ids += 1
        now = time.monotonic()
        limit = self.settings.output_bytes
        run = _Run(
            pe=pe,
            cell_id=self._cell_ids,
            ladder=Ladder(started=now, timeout=timeout, grace=self.settings.grace),
            started=now,
            caps={"stdout": StreamCap(limit), "stderr": StreamCap(limit)},
            collect=params.collect_output,
        )
        self._run = run
        log.debug("session %s: cell %d (request %r) started in pid %d", self.id, count, pe.request_id, interp.pid)
        try:
            await interp.send(
                ch.Exec(
                    id=run.cell_id,
                    code=params.code,
                    execution_count=count,
                    silent=params.silent,
                    allow_stdin=params.allow_stdin,
                    timeout=timeout,
                    repr_limit=limit,
                )
            )
            run.sent = True
            if pe.interrupt_requested:  # asked for while the Exec was being written
                self._sigint()
            result = await self._await_outcome(interp, run)
        finally:
            self._run = None
        if lost and not result.state_lost:
            result.state_lost = True  # the namespace this eval expected had died while idle
        self.server.stats.count_eval(result.status)
        if result.status == "killed" and result.cause:
            self.server.stats.count_kill(result.cause)
            log.info("session %s: cell %d (request %r) killed: %s", self.id, count, pe.request_id, result.cause)
        else:
            log.debug("session %s: cell %d (request %r) %s", self.id, count, pe.request_id, result.status)
        pe.finish(result)

    async def _await_outcome(self, interp: Interpreter, run: _Run) -> EvalResult:
        eof_at: float | None = None
        while True:
            now = time.monotonic()
            if run.done is not None:
                interp.drain()
                return self._result_from_done(interp, run, run.done)
            if interp.status is not None:
                interp.drain()
                result = self._result_killed(interp, run)
                interp.dispose()
                return result
            deadline = run.ladder.deadline
            if eof_at is None and interp.killed_by is None and interp.channel_eof:
                eof_at = now
            if eof_at is not None:
                deadline = min(deadline, eof_at + self.settings.grace)
            if now >= deadline:
                if run.ladder.expired(now) == "kill" or eof_at is not None:
                    interp.kill(run.ladder.reason or "channel closed")
                    await interp.exited.wait()
                    continue
            run.wake = anyio.Event()
            with anyio.move_on_after(max(0.0, deadline - now)):
                await run.wake.wait()

    def _finish_output(self, run: _Run) -> tuple[str | None, str | None, Truncated]:
        for stream in ("stdout", "stderr"):
            marker, tail = run.caps[stream].finish()
            for text in (marker, tail):
                if text:
                    self._emit(run, stream, text)
        truncated = Truncated(stdout=run.caps["stdout"].dropped, stderr=run.caps["stderr"].dropped)
        if not run.collect:
            return None, None, truncated
        return "".join(run.out["stdout"]), "".join(run.out["stderr"]), truncated

    def _result_from_done(self, interp: Interpreter, run: _Run, done: ch.Done) -> EvalResult:
        stdout, stderr, truncated = self._finish_output(run)
        status, cause = "ok", None
        if done.error is not None:
            status = "error"
            if done.stopped == "timeout":
                status, cause = "timeout", "timeout"
            elif done.stopped == "interrupt" or (run.pe.interrupt_requested and done.stopped):
                status, cause = "interrupted", "interrupt"
        state_lost = False
        if done.fatal:
            # The child asked to be replaced (e.g. MemoryError under a memory limit).
            interp.kill(done.fatal)
            status, cause, state_lost = "killed", done.fatal, True
        self.server.stats.count_detections(done.counters)
        return EvalResult(
            status=status,  # type: ignore[arg-type]
            # silent: the count is unchanged, and reported as it stands (Jupyter's reply does)
            execution_count=self.execution_count if run.pe.params.silent else done.execution_count,
            value=done.value,
            error=done.error,
            stdout=stdout,
            stderr=stderr,
            displays=run.displays if run.collect else None,
            truncated=truncated,
            warnings=done.warnings,
            state_lost=state_lost,
            cause=cause,
            duration_ms=round((time.monotonic() - run.started) * 1000, 3),
        )

    def _result_killed(self, interp: Interpreter, run: _Run) -> EvalResult:
        stdout, stderr, truncated = self._finish_output(run)
        cause = interp.killed_by
        status = interp.status if interp.status is not None else 0
        if cause is None:
            cause = process.exit_cause(status)
            cpu_limit = self.settings.limits.cpu_seconds
            if cause == "signal SIGXCPU":
                cause = "cpu"
            elif cause == "signal SIGKILL":
                # A SIGKILL we did not send: the CPU hard limit, or else the kernel's OOM killer.
                cause = "cpu" if cpu_limit and interp.cpu_used() >= cpu_limit else "memory"
        return EvalResult(
            status="killed",
            execution_count=self.execution_count,
            stdout=stdout,
            stderr=stderr,
            displays=run.displays if run.collect else None,
            truncated=truncated,
            state_lost=True,
            cause=cause,
            duration_ms=round((time.monotonic() - run.started) * 1000, 3),
        )


def _dropped(status: str, cause: str, *, state_lost: bool = False) -> EvalResult:
    """The answer for an eval that never ran (dropped from the queue)."""
    return EvalResult(
        status=status,  # type: ignore[arg-type]
        execution_count=None,
        state_lost=state_lost,
        cause=cause,
    )
