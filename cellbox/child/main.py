"""The child interpreter's entry point: one session, one namespace, one event loop.

Theory of operation: the supervisor starts this process with fd 0 on /dev/null, fds 1 and 2 on
pipes it reads, and the private channel (a socket) on fd 3. The child moves the channel to a
high, non-inheritable descriptor (so user code that prints, closes fds 0-2, forks or ``dup2``s
onto low fds cannot corrupt it), reads ``Configure``, applies cwd and limits, answers ``Hello``
and then runs the session's asyncio loop forever on the main thread. Cells arrive as ``Exec``
and are handed to the executor; ``Done`` goes back when a cell ends.

Interrupts are addressed: the supervisor writes ``Interrupt(id)`` and then sends SIGINT, which
only wakes the child to read the channel (``link.py``); the child stops cell ``id`` if it runs
or has been received and not started, and ignores the interrupt otherwise.

Invariants: only the main thread touches the channel; messages are written whole (one
``write`` loop per frame); a SIGINT never stops a cell by itself; the loop is restarted if a
``KeyboardInterrupt`` escapes it; end of the channel (the supervisor is gone) ends the process.
"""

from __future__ import annotations

import os
import signal
import sys

from cellbox.child import signals
from cellbox.child.link import CHANNEL_LOST, Cells, Channel, Route, channel_lost
from cellbox.protocol import channel as ch

__all__ = ["CHANNEL_LOST", "Host", "channel_lost", "main", "set_name"]

CHANNEL_FD = 3
_HIGH_FD = 200


def _setup_process() -> Channel:
    ppid = int(os.environ.pop("CELLBOX_PARENT", "0") or 0)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if ppid and os.getppid() != ppid:
            os._exit(70)  # the supervisor died before we could watch it
    fd = os.dup2(CHANNEL_FD, _HIGH_FD, inheritable=False) if _fd_free(_HIGH_FD) else os.dup(CHANNEL_FD)
    os.close(CHANNEL_FD)
    os.set_blocking(fd, True)
    return Channel(fd)


def _fd_free(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def set_name(name: str) -> None:
    """Name this process (``ps``/``top`` show it; at most 15 bytes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def _configure(chan: Channel, cfg: ch.Configure) -> str | None:
    """Apply the session's options; return an error text if the child cannot serve."""
    try:
        # The session id in the process name: forks inherit it, so the supervisor can find
        # this session's orphans even when their environment does not show the marker.
        set_name(f"cbx{cfg.session}"[:15])
        if cfg.env is not None:
            os.environ.clear()
            os.environ.update(cfg.env)
        if cfg.cwd:
            os.chdir(cfg.cwd)
        if cfg.limits is not None:
            from cellbox.child import limits

            limits.apply(cfg.limits)
    except Exception as exc:  # reported to the supervisor as a start failure
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    signals.reset()
    # Until the host listens, a SIGINT (a wake-up with nothing to act on yet) does nothing.
    signal.signal(signal.SIGINT, _not_listening)
    chan = _setup_process()
    cfg = chan.wait_for(ch.Configure)
    if cfg is None:
        os._exit(0)
    assert isinstance(cfg, ch.Configure)
    python = ".".join(map(str, sys.version_info[:3]))
    error = _configure(chan, cfg)
    host = None
    if error is None:
        try:
            host = Host(chan, cfg)
        except Exception as exc:  # e.g. openFiles or memoryMb too low for the loop itself
            error = f"the interpreter cannot start under this session's limits: {type(exc).__name__}: {exc}"
    if host is None:
        chan.send(ch.Hello(pid=os.getpid(), python=python, error=error))
        os._exit(1)
    host.run(python)


def _not_listening(signum: int, frame: object) -> None:
    pass


class Host:
    """Runs the session loop and routes channel messages to the executor.

    Interrupts are addressed (``link.py`` has the theory): the SIGINT handler only wakes the
    child to read the channel, and an ``Interrupt(id)`` read from any reader is applied by
    ``_apply_interrupts``. ``cell_id`` is the cell whose ``Done`` has not been sent (displays
    and input requests carry it); ``cells`` the cells read and not ended.
    """

    def __init__(self, chan: Channel, cfg: ch.Configure) -> None:
        import asyncio
        import collections

        from cellbox.child.executor import Executor

        self.chan = chan
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.cell_id: int | None = None
        self.queue: collections.deque[ch.Exec] = collections.deque()
        self.cells = Cells()
        self._drain_soon = False  # a _drain is scheduled
        import types

        # The namespace is a real __main__ module, so pickle and multiprocessing find classes
        # and functions defined in cells (IPython does the same).
        main_module = types.ModuleType("__main__")
        sys.modules["__main__"] = main_module
        limits = cfg.limits
        self.executor = Executor(
            main_module.__dict__,
            emit_stream=self._emit_stream,
            emit_display=self._emit_display,
            request_input=self._request_input,
            detection=cfg.detection,
            ast_cache_size=cfg.ast_cache_size,
            memory_limited=bool(limits and limits.memory_mb),
        )
        chan.on_exec = self.cells.received
        chan.hold = self.executor.hold
        chan.release = self.executor.release
        for msg in chan.pending:  # read along with Configure
            if isinstance(msg, ch.Exec):
                self.cells.received(msg.id)

    # -- sinks -----------------------------------------------------------------------------

    @staticmethod
    def _emit_stream(name: str, text: str) -> None:
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        fd = 1 if name == "stdout" else 2
        while data:
            try:
                data = data[os.write(fd, data) :]
            except InterruptedError:
                continue
            except OSError:
                return  # the user closed or redirected the fd; output is lost, the cell is not

    def _emit_display(self, display) -> None:
        self.chan.send(ch.DisplayEvent(id=self.cell_id, display=display))

    def _request_input(self, prompt: str, password: bool) -> str:
        self.chan.send(ch.InputRequest(id=self.cell_id or 0, prompt=prompt, password=password))
        reply = self.chan.wait_for(ch.InputReply, self._interrupt_input)
        if reply is None or reply.text is None:  # type: ignore[union-attr]
            raise EOFError("no input")
        return reply.text  # type: ignore[union-attr]

    def _interrupt_input(self) -> None:
        # The cell is on this stack (inside input()): an interrupt for it raises right here.
        self._apply_interrupts(sys._getframe())

    # -- loop ------------------------------------------------------------------------------

    def run(self, python: str) -> None:
        ex = self.executor
        ex.install()
        from cellbox.child import figures
        from cellbox.protocol.messages import Display

        figures.install(lambda data: self._emit_display(Display(data=data)))
        self.chan.on_pending = self._schedule_drain
        signal.signal(signal.SIGINT, self._on_sigint)
        self.loop.add_reader(self.chan.fd, self._on_readable)
        from cellbox.child.capture import start_flusher

        start_flusher()  # before any cell (not from inside a cell's print) and before Hello
        self.chan.send(ch.Hello(pid=os.getpid(), python=python))
        self._schedule_drain()  # messages that came with Configure
        while True:
            try:
                self.loop.run_forever()
                break
            except BaseException as exc:  # escaped a task step: the executor decides
                ex.handle_escaped(exc)
        os._exit(0)

    def _on_sigint(self, signum: int, frame: object) -> None:
        """A wake-up: read the channel and apply the ``Interrupt`` messages it brought. A
        SIGINT that brings none (sent by someone else, or late) changes nothing."""
        if self.chan.collect(wakeup=True):
            self._apply_interrupts(frame)

    def _apply_interrupts(self, frame: object) -> None:
        """Apply each collected ``Interrupt`` once; ``frame`` is where the code was when it was
        read (the running cell's code is interrupted only if it is on that stack)."""
        now = False
        while True:
            try:
                cell_id = self.chan.interrupts.popleft()
            except IndexError:
                break
            route = self.cells.route(cell_id, self.executor.cell_id)
            if route is Route.NOW:
                now = True
            elif route is Route.AT_START:
                self.executor.interrupt_next(cell_id, "interrupt")
        if now:  # last: it may raise
            self.executor.interrupt("interrupt", frame)  # type: ignore[arg-type]

    def _schedule_drain(self) -> None:
        if not self._drain_soon:
            self._drain_soon = True
            self.loop.call_soon_threadsafe(self._drain)  # safe from a signal handler

    def _on_readable(self) -> None:
        self._drain_soon = True  # what ``collect`` adds is drained right below, not scheduled
        self.chan.collect()
        self._drain()

    def _drain(self) -> None:
        """Apply interrupts, then handle pending messages in order (an ``Exec`` of a cell that
        does not await runs to its end in here)."""
        self._drain_soon = False
        self._apply_interrupts(None)
        pending = self.chan.pending
        while True:
            try:
                msg = pending.popleft()
            except IndexError:
                break
            self._handle(msg)
        if self.chan.eof:
            self.loop.stop()

    def _handle(self, msg: object) -> None:
        match msg:
            case ch.Exec():
                self.queue.append(msg)
                if self.cell_id is None:
                    self._next()
            case ch.Complete() | ch.Inspect():
                self.chan.send(self._editor(msg))
            case _:
                pass  # a stray InputReply (its cell was interrupted) is dropped

    def _editor(self, msg: ch.Complete | ch.Inspect) -> ch.Msg:
        try:
            from cellbox.child import editor
        except ImportError:
            editor = None  # type: ignore[assignment]
        if isinstance(msg, ch.Complete):
            if editor is None:
                return ch.CompleteReply(id=msg.id, matches=[], cursor_start=msg.cursor, cursor_end=msg.cursor)
            return editor.complete(self.executor.namespace, msg)
        if editor is None:
            return ch.InspectReply(id=msg.id, found=False)
        return editor.inspect(self.executor.namespace, msg)

    def _next(self) -> None:
        while self.queue and self.cell_id is None:
            msg = self.queue.popleft()
            self.cell_id = msg.id
            self.executor.start(
                msg.code,
                cell_id=msg.id,
                execution_count=msg.execution_count,
                silent=msg.silent,
                allow_stdin=msg.allow_stdin,
                timeout=msg.timeout,
                repr_limit=msg.repr_limit,
                on_done=self._done,
            )

    def _done(self, done: ch.Done) -> None:
        if "matplotlib.pyplot" in sys.modules:  # figures the cell left open, as Jupyter shows them
            from cellbox.child import figures

            figures.flush()
        # Before Done: from here on an Interrupt for this cell is late and ignored.
        self.cells.ended(done.id)
        self.cell_id = None
        self.chan.send(done)
        if self.queue:
            self.loop.call_soon(self._next)


if __name__ == "__main__":
    main()
