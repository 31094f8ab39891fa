"""The cell executor: runs cells against a session's namespace on its persistent event loop.

Theory of operation
-------------------
``start()`` runs one cell. Phases: *compile* (``compiler.py``: parse, fallback rewrites,
last-expression split; a ``SyntaxError`` ends the cell before anything runs), then *user*
(the cell's code), then *finish* (``Done`` is built and ``on_done`` called). A cell whose code
objects have no ``CO_COROUTINE`` runs synchronously inside ``start()`` (the fast path); one that
awaits runs as a Task in the session's ``contextvars.Context``, so ``ContextVar.set`` persists
and background tasks keep running between cells.

Invariants:

- ``running`` is True iff a cell is between ``start()`` and its ``on_done``; ``on_done`` is
  called exactly once per ``start()``, after ``running`` went back to False (so the host may
  start the next cell from inside it).
- User code runs only inside ``_run_sync``/``_run_async``, each of which catches every
  ``BaseException``: a user error never escapes into the loop or the host.
- ``interrupt()`` raises ``KeyboardInterrupt``/``TimeoutError`` only into the running cell's
  own frames (its runner frame is on the interrupted stack and the cell is in its user phase).
  Otherwise an awaiting cell is cancelled through ``loop.call_soon_threadsafe`` (which also
  wakes a loop sleeping in its selector); background tasks are never raised into.
- The SIGALRM timer is armed iff a cell with a timeout is running; a late alarm (its deadline
  not reached) is ignored.
- Between ``hold()`` and ``release()`` (engine code that user code called, such as a channel
  write) nothing is raised into the cell; what would have been is raised by ``release()``.
- ``interrupt_next(id)`` stops cell ``id`` when it starts, never another one.

Process-wide hooks (``install``) and the namespace protection done before every cell are in
``guard.py``; reports of background failures in ``background.py``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from cellbox.child import analysis, compiler, errors, rewrite, richrepr
from cellbox.child.background import BackgroundReporter
from cellbox.child.capture import StdinGate, StreamWriter
from cellbox.child.compiler import cache_size_from_env
from cellbox.child.guard import ProcessGuard
from cellbox.protocol.channel import Done
from cellbox.protocol.messages import DetectionPolicy, Display, ErrorInfo, Value, Warning

__all__ = ["Executor", "cache_size_from_env"]


class _Cell:
    """State of the running cell."""

    __slots__ = ("id", "count", "silent", "allow_stdin", "timeout", "deadline", "repr_limit",
                 "on_done", "t0", "phase", "in_user", "task", "stopped", "pending", "held",
                 "cancel_reason", "compiled", "value", "exc", "warnings", "deltas")

    def __init__(self, cell_id: int, count: int, silent: bool, allow_stdin: bool,
                 timeout: float | None, repr_limit: int, on_done: Callable[[Done], None]) -> None:
        self.id = cell_id
        self.count = count
        self.silent = silent
        self.allow_stdin = allow_stdin
        self.timeout = timeout
        self.deadline: float | None = None
        self.repr_limit = repr_limit
        self.on_done = on_done
        self.t0 = time.perf_counter()
        self.phase = "compile"  # -> "user" -> "after" (user code done) -> "finish"
        self.in_user = False  # inside a runner's try block, running user code
        self.task: asyncio.Task[None] | None = None
        self.stopped: str | None = None  # an interrupt or the timeout was delivered
        self.pending: str | None = None  # one arrived before user code started
        self.held: str | None = None  # one arrived inside a hold() (raised by release())
        self.cancel_reason: str | None = None
        self.compiled: compiler.CompiledCell | None = None
        self.value: Value | None = None
        self.exc: BaseException | None = None
        self.warnings: list[Warning] = []
        self.deltas: dict[str, int] = {}


class Executor:
    """Runs the cells of one session. See the module docstring for the theory of operation.

    ``emit_stream(name, text)`` receives captured output (``name`` is ``"stdout"`` or
    ``"stderr"``), ``emit_display(Display)`` rich output, ``request_input(prompt, password)``
    answers ``input()``/``getpass()`` in cells started with ``allow_stdin=True``.
    ``stdout``/``stderr`` are the capture writers (``sys.stdout``/``sys.stderr`` once
    installed); ``flush()`` sends what they buffer.
    """

    namespace: dict[str, Any]
    context: contextvars.Context
    counters: dict[str, int]

    def __init__(self, namespace: dict[str, Any] | None = None, *,
                 emit_stream: Callable[[str, str], None],
                 emit_display: Callable[[Display], None],
                 request_input: Callable[[str, bool], str] | None = None,
                 detection: DetectionPolicy | None = None,
                 ast_cache_size: int | None = None,
                 memory_limited: bool = False) -> None:
        if namespace is None:
            namespace = {"__name__": "__main__", "__doc__": None, "__package__": None,
                         "__spec__": None, "__loader__": None}
        namespace["__builtins__"] = builtins
        namespace["__name__"] = "__main__"
        self.namespace = namespace
        self.context = contextvars.copy_context()
        self.memory_limited = memory_limited
        self._detector = analysis.Detector(detection)
        self.counters = self._detector.counters
        scanner = analysis.scan if self._detector.enabled else None
        self._compiler = compiler.CellCompiler(cache_size_from_env(ast_cache_size), scanner)
        self.stdout = StreamWriter("stdout", 1, emit_stream)
        self.stderr = StreamWriter("stderr", 2, emit_stream)
        self._stdin = StdinGate(request_input, self.flush)
        self._background = BackgroundReporter(self.stderr)
        self._guard = ProcessGuard(
            self.stdout, self.stderr, input=self._stdin.make_input(),
            getpass=self._stdin.make_getpass(),
            display=richrepr.make_display(emit_display, self.flush, self._repr_limit,
                                          self._note))
        self._cell: _Cell | None = None
        self._early: dict[int, str] = {}  # cell id -> reason; see interrupt_next
        self._holds = 0  # see hold
        self._loop: asyncio.AbstractEventLoop | None = None
        self._filenames: dict[int, int] = {}
        self._auto_count = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True iff a cell is running (between ``start()`` and its ``on_done``)."""
        return self._cell is not None

    @property
    def cell_id(self) -> int | None:
        """The id of the running cell (set first thing in ``start()``), or None."""
        cell = self._cell
        return None if cell is None else cell.id

    def install(self) -> None:
        """Take over the process for this session (``guard.py`` lists what): output
        streams, ``input``/``getpass``/``display``, the SIGALRM handler, the loop's exception
        handler and task factory. Call once, on the main thread, with the session loop set as
        the current loop; ``uninstall()`` puts everything back."""
        if self._guard.installed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        self._loop = loop
        self._guard.install(loop, self._on_alarm, self._background)

    def uninstall(self) -> None:
        """Undo ``install()`` (flushing the writers first)."""
        if self._guard.installed:
            self.flush()
            self._guard.uninstall()

    def flush(self) -> None:
        """Send buffered output of both writers to the sink."""
        self.stdout.flush()
        self.stderr.flush()

    # --- running cells -----------------------------------------------------------------------

    def start(self, code: str, *, cell_id: int = 0, execution_count: int, silent: bool = False,
              allow_stdin: bool = False, timeout: float | None = None,
              repr_limit: int = 1 << 20, on_done: Callable[[Done], None]) -> None:
        """Run one cell; ``on_done(Done)`` is called exactly once when it has finished.

        Must be called while the session loop is running (from a callback or a task on it).
        A cell that does not await runs to completion inside this call (``on_done`` is called
        before it returns); one that awaits runs as a Task in ``self.context``. User errors
        never raise here: they are ``Done.error``. Raises ``RuntimeError`` if a cell is already
        running. ``timeout`` (seconds; None, 0 or more than ``MAX_TIMEOUT`` for none) counts
        from this call; ``silent``: no value and ``_`` unchanged; ``allow_stdin``: whether
        ``input()`` may ask the client.
        """
        if self._cell is not None:
            raise RuntimeError("a cell is already running in this session")
        cell = _Cell(cell_id, execution_count, silent, allow_stdin, timeout, repr_limit,
                     on_done)
        self._cell = cell
        # Registered first, consumed second: a signal between the two lands on the cell itself.
        early = self._early.pop(cell_id, None)
        if early is not None and cell.pending is None:
            cell.pending = cell.stopped = early
        try:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._guard.protect(self.namespace)
            self.flush()
            self._stdin.allow = allow_stdin
            if timeout and 0 < timeout <= MAX_TIMEOUT and self._guard.installed:
                cell.deadline = time.monotonic() + timeout
                self._guard.arm_timer(timeout)
            filename = self._filename(execution_count)
            compiler.register_source(filename, code)
            try:
                compiled = self._compiler.compile(code, filename)
            except Exception as exc:  # SyntaxError, or ValueError/RecursionError from compile()
                cell.exc = exc
                self._finish(cell)
                return
            cell.compiled = compiled
            cell.warnings, cell.deltas = self._detector.check(compiled.facts, self.namespace)
            cell.phase = "user"
            if compiled.is_async:
                cell.task = self._loop.create_task(self._run_async(cell, compiled),
                                                   context=self.context)
                cell.task.add_done_callback(lambda _task: self._finish(cell))
            else:
                self.context.run(self._run_sync, cell, compiled)
                self._finish(cell)
        except BaseException as exc:
            # A failure of the executor itself (or an interrupt outside user code): report it
            # as the cell's error rather than leave the session stuck in "running".
            if self._cell is cell and cell.phase != "finish":
                cell.exc = exc
                self._finish(cell)
            else:
                raise

    async def run(self, code: str, **kwargs: Any) -> Done:
        """``start()`` the cell and wait for its ``Done`` (for tests and simple hosts).
        ``execution_count`` defaults to a counter of this executor's ``run`` calls."""
        if "execution_count" not in kwargs:
            self._auto_count += 1
            kwargs["execution_count"] = self._auto_count
        future: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self.start(code, on_done=lambda done: future.done() or future.set_result(done),
                   **kwargs)
        return await future

    def _run_sync(self, cell: _Cell, compiled: compiler.CompiledCell) -> None:
        ns = self.namespace
        try:
            cell.in_user = True
            if cell.pending is not None:
                raise self._stop_exception(cell.pending, cell)
            if compiled.body is not None:
                exec(compiled.body, ns)
            if compiled.expr is not None:
                self._set_value(cell, eval(compiled.expr, ns))
            cell.in_user = False
        except BaseException as exc:
            cell.in_user = False
            cell.exc = exc
        cell.phase = "after"
        self._guard.restore_builtins()

    async def _run_async(self, cell: _Cell, compiled: compiler.CompiledCell) -> None:
        ns = self.namespace
        try:
            try:
                cell.in_user = True
                if cell.pending is not None:
                    cell.cancel_reason = cell.pending
                    raise asyncio.CancelledError(_cancel_message(cell.pending))
                if compiled.body is not None:
                    if compiled.body_async:
                        await eval(compiled.body, ns)
                    else:
                        exec(compiled.body, ns)
                if compiled.expr is not None:
                    value = eval(compiled.expr, ns)
                    if compiled.expr_async:
                        value = await value
                    self._set_value(cell, value)
            except asyncio.CancelledError as exc:
                if cell.cancel_reason == "timeout":
                    raise self._stop_exception("timeout", cell) from exc
                raise
            cell.in_user = False
        except BaseException as exc:
            cell.in_user = False
            cell.exc = exc
        cell.phase = "after"
        self._guard.restore_builtins()

    def _set_value(self, cell: _Cell, value: Any) -> None:
        if value is None or cell.silent:
            return
        cell.value = richrepr.to_value(value, cell.repr_limit, self._note)
        self.namespace["_"] = value

    def _finish(self, cell: _Cell) -> None:
        if cell.phase == "finish":
            return
        cell.phase = "finish"
        if cell.deadline is not None:
            self._guard.disarm_timer()
        task = cell.task
        if task is not None and cell.exc is None and task.done():
            if task.cancelled():  # cancelled before its first step
                cell.exc = (self._stop_exception("timeout", cell)
                            if cell.cancel_reason == "timeout"
                            else asyncio.CancelledError(_cancel_message("interrupt")))
            elif task.exception() is not None:
                cell.exc = task.exception()
        compiled = cell.compiled
        if compiled is not None and compiled.rewritten:
            for name in [k for k in self.namespace if k.startswith(rewrite.HELPER_PREFIX)]:
                del self.namespace[name]
        try:
            self._background.report_unretrieved()
            self.flush()
        except Exception:
            pass
        error: ErrorInfo | None = None
        fatal: str | None = None
        exc = cell.exc
        if exc is not None:
            cell.value = None
            error = self._error_info(exc)
            if isinstance(exc, MemoryError) and self.memory_limited:
                fatal = "memory"
        done = Done(id=cell.id, execution_count=cell.count, value=cell.value, error=error,
                    warnings=cell.warnings, stopped=cell.stopped, fatal=fatal,
                    duration_ms=(time.perf_counter() - cell.t0) * 1000.0,
                    counters=cell.deltas)
        cell.exc = None  # the Done holds all that is needed; drop the frames
        self._cell = None
        try:
            cell.on_done(done)
        finally:
            # An interrupt_next for this cell that came after it ended (the host still counted
            # it as not started) must not stop a later cell.
            self._early.pop(cell.id, None)

    def _error_info(self, exc: BaseException) -> ErrorInfo:
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
        if sys.version_info >= (3, 12):
            sys.last_exc = exc
        try:
            info = errors.error_info(exc)
        except BaseException as fmt_exc:  # MemoryError while formatting, and the like
            info = ErrorInfo(type=type(exc).__name__, message="",
                             traceback=f"{type(exc).__name__} (not formatted: {fmt_exc!r})")
        sys.last_traceback = exc.__traceback__
        return info

    # --- interrupts and timeouts -------------------------------------------------------------

    def interrupt(self, reason: str, frame: FrameType | None) -> None:
        """Deliver an interrupt (``reason="interrupt"``, from the SIGINT handler) or the cell
        timeout (``"timeout"``, from SIGALRM) to the running cell; ``frame`` is the frame the
        signal interrupted.

        No cell running: ignored. The cell's own code is executing in ``frame``:
        ``KeyboardInterrupt`` (or ``TimeoutError``) is raised right there. Otherwise (the loop
        is waiting, or another task is running) the cell's task is cancelled and the loop
        woken; the cancelled cell reports ``CancelledError`` (``TimeoutError`` from it for a
        timeout). Either way ``Done.stopped`` says so.
        """
        cell = self._cell
        if cell is None or cell.phase in ("after", "finish"):
            return
        if reason == "timeout" and (cell.deadline is None
                                    or time.monotonic() < cell.deadline - 0.005):
            return  # the alarm of an earlier cell, delivered late
        if cell.in_user:
            if _runner_on_stack(frame):
                if self._holds:  # engine code the cell called must not be cut short
                    cell.held = reason
                    return
                cell.stopped = reason
                raise self._stop_exception(reason, cell)
        elif cell.task is None:  # user code has not started: the runner raises on entry
            cell.pending = cell.stopped = reason
            return
        if cell.task is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_cell, cell, reason)

    def interrupt_next(self, cell_id: int, reason: str) -> None:
        """An interrupt for cell ``cell_id``, which the host has received but not started yet:
        its ``start`` stops it before user code runs (``Done.stopped`` is ``reason``). Safe to
        call from a signal handler at any point before or during that ``start``; forgotten when
        that cell ends, so a call that comes too late never stops another cell."""
        self._early[cell_id] = reason

    def hold(self) -> None:
        """Begin engine code that user code calls and that must not be cut short, such as a
        write to the supervisor's channel from ``display()`` or ``input()``: an interrupt or
        timeout that would raise into the cell meanwhile is kept, and ``release()`` raises it.
        Holds nest; pair every ``hold`` with a ``release`` (in a ``finally``)."""
        self._holds += 1

    def release(self) -> None:
        """End a ``hold()``; when the last one ends, raise what it kept (``KeyboardInterrupt``
        or the cell's ``TimeoutError``) into the cell, which is on the caller's stack."""
        self._holds -= 1
        cell = self._cell
        if self._holds or cell is None or cell.held is None:
            return
        reason, cell.held = cell.held, None
        if cell.in_user:
            cell.stopped = reason
            raise self._stop_exception(reason, cell)

    def handle_escaped(self, exc: BaseException) -> None:
        """Called by whoever runs the loop when ``KeyboardInterrupt`` or ``SystemExit`` escaped
        ``loop.run_forever()`` (raised by a background task or callback; the executor never
        lets a cell's own exceptions escape). Reports it on stderr and, for
        ``KeyboardInterrupt``, cancels the running cell's task. The session goes on."""
        self._background.report_escaped(exc)
        cell = self._cell
        if isinstance(exc, KeyboardInterrupt) and cell is not None and cell.task is not None:
            self._cancel_cell(cell, "interrupt")

    def _cancel_cell(self, cell: _Cell, reason: str) -> None:
        if cell is not self._cell or cell.task is None or cell.task.done():
            return
        cell.stopped = cell.cancel_reason = reason
        cell.task.cancel(_cancel_message(reason))

    def _stop_exception(self, reason: str, cell: _Cell) -> BaseException:
        if reason == "timeout":
            return TimeoutError(f"cell timed out after {cell.timeout:g} s")
        return KeyboardInterrupt()

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        self.interrupt("timeout", frame)

    # --- hooks -------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self.stderr.write(f"cellbox: {text}\n")

    def _repr_limit(self) -> int:
        cell = self._cell
        return cell.repr_limit if cell is not None else 1 << 20

    def _filename(self, count: int) -> str:
        used = self._filenames.get(count, 0)
        self._filenames[count] = used + 1
        return f"<cell {count}>" if not used else f"<cell {count}.{used + 1}>"


#: The longest cell timeout (seconds, about 31 years) the SIGALRM timer is armed for. A longer
#: one, ``inf`` included, means no timeout: ``setitimer`` cannot arm it (``OverflowError``).
MAX_TIMEOUT = 1e9


def _cancel_message(reason: str) -> str:
    return {"interrupt": "cell interrupted", "timeout": "cell timed out"}.get(reason,
                                                                             f"cell {reason}")


_RUN_SYNC = Executor._run_sync.__code__
_RUN_ASYNC = Executor._run_async.__code__


def _runner_on_stack(frame: FrameType | None) -> bool:
    """True iff a cell runner's frame is on the stack that ends in ``frame``."""
    while frame is not None:
        code = frame.f_code
        if code is _RUN_SYNC or code is _RUN_ASYNC:
            return True
        frame = frame.f_back
    return False
