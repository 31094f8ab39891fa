"""The child interpreter's entry point: one session, one namespace, one event loop.

Theory of operation: the supervisor starts this process with fd 0 on /dev/null, fds 1 and 2 on
pipes it reads, and the private channel (a socket) on fd 3. The child moves the channel to a
high, non-inheritable descriptor (so user code that prints, closes fds 0-2, forks or ``dup2``s
onto low fds cannot corrupt it), reads ``Configure``, applies cwd and limits, answers ``Hello``
and then runs the session's asyncio loop forever on the main thread. Cells arrive as ``Exec``
and are handed to the executor; ``Done`` goes back when a cell ends.

Invariants: only the main thread touches the channel; messages are written whole (one
``write`` loop per frame); the loop is restarted if a ``KeyboardInterrupt`` escapes it; end of
the channel (the supervisor is gone) ends the process.
"""

from __future__ import annotations

import os
import signal
import sys

from cellbox.protocol import channel as ch

CHANNEL_FD = 3
_HIGH_FD = 200
#: The exit status of a child whose channel to the supervisor broke under it (``exit 70``).
CHANNEL_LOST = 70


def channel_lost(exc: BaseException) -> None:
    """The channel is gone while the supervisor lives (user code closed or replaced its
    descriptor): say so on stderr, which the eval's result carries, and exit."""
    try:
        os.write(2, f"\ncellbox: this interpreter lost its channel to the supervisor ({exc}); did the "
                    "cell close file descriptors it did not open? The session restarts.\n".encode())
    except OSError:
        pass
    os._exit(CHANNEL_LOST)


class Channel:
    """The child's end of the private channel."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reader = ch.ChannelReader(to_child=True)
        self.pending: list[object] = []

    def send(self, msg: ch.Msg) -> None:
        data = memoryview(ch.encode(msg))
        while data:
            try:
                n = os.write(self.fd, data)
            except InterruptedError:
                continue
            except OSError as exc:
                channel_lost(exc)
            data = data[n:]

    def read_available(self) -> list[object]:
        """Read once (the fd is readable) and return whole messages; ``[None]`` at EOF."""
        try:
            data = os.read(self.fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            channel_lost(exc)
        if not data:
            return [None]
        return self.reader.feed(data)

    def wait_for(self, kind: type) -> object | None:
        """Block until a message of ``kind`` arrives (others are kept for the loop)."""
        while True:
            for i, msg in enumerate(self.pending):
                if isinstance(msg, kind):
                    return self.pending.pop(i)
            data = os.read(self.fd, 1 << 16)
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))


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


class Host:
    """Runs the session loop and routes channel messages to the executor."""

    def __init__(self, chan: Channel, cfg: ch.Configure) -> None:
        import asyncio

        from cellbox.child.executor import Executor

        self.chan = chan
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.cell_id: int | None = None
        self.queue: list[ch.Exec] = []
        self.execs_in_hand = 0  # Exec messages read from the channel and not yet queued
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
        reply = self.chan.wait_for(ch.InputReply)
        if reply is None or reply.text is None:  # type: ignore[union-attr]
            raise EOFError("no input")
        return reply.text  # type: ignore[union-attr]

    # -- loop ------------------------------------------------------------------------------

    def run(self, python: str) -> None:
        ex = self.executor
        ex.install()
        from cellbox.child import figures
        from cellbox.protocol.messages import Display

        figures.install(lambda data: self._emit_display(Display(data=data)))
        signal.signal(signal.SIGINT, self._on_sigint)
        self.loop.add_reader(self.chan.fd, self._on_readable)
        self.chan.send(ch.Hello(pid=os.getpid(), python=python))
        while True:
            try:
                self.loop.run_forever()
                break
            except BaseException as exc:  # escaped a task step: the executor decides
                ex.handle_escaped(exc)
        os._exit(0)

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.executor.running:
            self.executor.interrupt("interrupt", frame)
        elif self.cell_id is not None or self.queue or self.execs_in_hand or _readable(self.chan.fd):
            # The supervisor interrupted a cell we have not started yet (its Exec is unread, in
            # hand or being set up): the executor stops it as soon as it starts. A signal that
            # comes when none of these holds is a late one for a cell that already finished
            # (the supervisor writes an Exec only after the previous Done).
            self.executor.interrupt_next("interrupt")
        # else: a late signal for a cell that already finished; nothing to stop

    def _on_readable(self) -> None:
        msgs = self.chan.pending + self.chan.read_available()
        self.chan.pending = []
        self.execs_in_hand = sum(isinstance(m, ch.Exec) for m in msgs)
        try:
            for msg in msgs:
                if msg is None:
                    self.loop.stop()
                    return
                self._handle(msg)
        finally:
            self.execs_in_hand = 0

    def _handle(self, msg: object) -> None:
        if isinstance(msg, ch.Exec):
            self.queue.append(msg)
            self.execs_in_hand -= 1  # covered by the queue from here on
            if self.cell_id is None:
                self._next()
        elif isinstance(msg, ch.Complete | ch.Inspect):
            self.chan.send(self._editor(msg))
        # a stray InputReply (its cell was interrupted) is dropped

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
            msg = self.queue.pop(0)
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
        self.cell_id = None  # before Done: a SIGINT from here on is late for this cell
        self.chan.send(done)
        if self.queue:
            self.loop.call_soon(self._next)


def _readable(fd: int) -> bool:
    import select

    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    main()
