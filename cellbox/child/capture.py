"""Output capture and input for user code: ``sys.stdout``/``sys.stderr`` writers, ``input()``.

``StreamWriter`` buffers and sends to the sink (``emit_stream(name, text)``) in as few calls as
keep output prompt:

- A line after a quiet moment goes at once: the write that completes it is sent (with what was
  buffered before it), so the first line of a cell, or a lone ``print`` before a long call, is
  never held back.
- Lines that follow within ``delay`` (a burst) are coalesced: they are sent when the buffer
  passes ``limit`` characters (~64 KiB), on ``flush()`` (the executor flushes at cell start and
  end, before every display event and before ``input()``), or by a daemon flusher thread at
  most ``delay`` (~3 ms) after the burst's previous send. When a window passes with nothing to
  send, the writer is quiet again.
- A partial line waits for its newline, as with a terminal's line buffering, unless a burst's
  flusher or ``flush()`` sends it (``print(..., flush=True)`` sends it at once).

Text reaching the sink is always valid UTF-8: lone surrogates are backslash-escaped. Writes may
come from any thread; a reentrant lock per writer keeps each stream's order. The flusher thread
blocks every signal (so a SIGINT for the main thread never lands on it) and is started only
when a burst needs it; a fork flushes the writers first, and the child gets fresh locks and no
flusher (it starts its own when needed).
"""

from __future__ import annotations

import io
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from cellbox.child import signals

StreamSink = Callable[[str, str], None]

NO_STDIN = "stdin is not enabled for this eval (pass allowStdin: true to read input)"

#: Coalesced output is sent at most this long after the previous send of its writer (seconds).
DELAY = 0.003
#: A burst's buffer is sent when it passes this many characters.
LIMIT = 64 * 1024


def clean(text: str) -> str:
    """``text`` made encodable as UTF-8 (lone surrogates become ``\\udcxx`` escapes)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class StreamWriter(io.TextIOBase):
    """A text stream for ``sys.stdout``/``sys.stderr`` that forwards to a sink (see the module
    docstring for when). ``delay`` None: no coalescing, each line goes as it is completed.

    ``fileno()`` returns the real descriptor (1 or 2; the supervisor reads those pipes), so
    libraries that want a file descriptor work. ``close()`` only flushes: user code cannot
    close the session's output.
    """

    encoding = "utf-8"
    errors = "strict"
    line_buffering = True
    newlines = None
    mode = "w"

    def __init__(self, name: str, fd: int, sink: StreamSink, limit: int = LIMIT,
                 delay: float | None = DELAY) -> None:
        super().__init__()
        self.stream = name
        self.name = f"<{name}>"
        self._fd = fd
        self._sink = sink
        self._limit = limit
        self._delay = delay
        # Written pieces, in order. ``write`` appends without the lock (a deque's append is
        # atomic); everything that sends takes the lock and pops what it sends, so no piece is
        # lost or sent twice and sends never interleave.
        self._pieces: deque[str] = deque()
        self._size = 0  # about the characters in _pieces (only decides when to send)
        self._burst = False  # a line went out less than `delay` ago: coalesce the next ones
        self._sending = False  # _send_locked is under way on the lock's thread
        self._lock = threading.RLock()
        self._binary: BinaryWriter | None = None
        _writers.add(self)

    def write(self, s: str) -> int:
        if type(s) is not str and not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._pieces.append(s)
        self._size += len(s)
        if self._size >= self._limit or ("\n" in s and not self._burst):
            with self._lock:
                self._send_locked()
                if not self._burst and self._delay is not None and "\n" in s:
                    self._burst = True
                    _flusher.schedule(self, self._delay)
        return len(s)

    def flush(self) -> None:
        """Send what is buffered now; the next line goes at once."""
        with self._lock:
            self._send_locked()
            self._burst = False
            self._send_locked()  # a writer on another thread that still saw the burst

    def _on_timer(self) -> None:
        """The flusher's call, ``delay`` after a send in a burst."""
        with self._lock:
            if not self._burst:
                return
            if self._pieces:
                self._send_locked()
                _flusher.schedule(self, self._delay)  # type: ignore[arg-type]
            else:
                self._burst = False  # a quiet window: the next line goes at once
                self._send_locked()  # a writer that still saw the burst

    def _send_locked(self) -> None:
        pieces = self._pieces
        n = len(pieces)
        if not n or self._sending:
            # (_sending: a signal handler printed in the middle of a send on this thread; what
            # it wrote goes with the next send, after what the interrupted one is sending)
            return
        self._sending = True
        try:
            popleft = pieces.popleft
            text = popleft() if n == 1 else "".join([popleft() for _ in range(n)])
            self._size = 0
            if text:
                self._sink(self.stream, clean(text))
        finally:
            self._sending = False

    def _after_fork(self) -> None:
        self._lock = threading.RLock()
        self._burst = False
        self._sending = False

    @property
    def buffer(self) -> BinaryWriter:
        if self._binary is None:
            self._binary = BinaryWriter(self)
        return self._binary

    def close(self) -> None:
        self.flush()

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return False

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<cellbox.StreamWriter name={self.name!r} encoding='utf-8'>"


class _Flusher:
    """One daemon thread that calls ``_on_timer`` of writers when their delay has passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())  # reentrant: signal handlers print
        self._due: dict[StreamWriter, float] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread now (the host does, before any cell): a thread started from
        inside a cell's ``print`` would hold an interrupt back until the print returns."""
        with self._cond:
            if self._thread is None:
                self._start()

    def schedule(self, writer: StreamWriter, delay: float) -> None:
        with self._cond:
            if writer in self._due:
                return
            self._due[writer] = time.monotonic() + delay
            if self._thread is None:
                self._start()
            self._cond.notify()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="cellbox-output-flusher", daemon=True)
        signals.start_blocked(thread)  # a SIGINT must wake the main thread, not this one
        self._thread = thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    ready = [w for w, at in self._due.items() if at <= now]
                    if ready:
                        break
                    self._cond.wait(min(self._due.values()) - now if self._due else None)
                for writer in ready:
                    del self._due[writer]
            for writer in ready:  # outside the condition's lock: a send may block on the pipe
                try:
                    writer._on_timer()
                except Exception:
                    pass  # a sink that fails loses this output, never the flusher

    def after_fork(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._due = {}
        self._thread = None


_writers: weakref.WeakSet[StreamWriter] = weakref.WeakSet()
_flusher = _Flusher()
start_flusher = _flusher.start


def _before_fork() -> None:
    for writer in list(_writers):  # or the child would send the parent's buffered output too
        try:
            writer.flush()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    _flusher.after_fork()
    for writer in list(_writers):
        writer._after_fork()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class BinaryWriter(io.RawIOBase):
    """``sys.stdout.buffer``: bytes decoded as UTF-8 (invalid bytes replaced) into the text
    writer."""

    def __init__(self, text: StreamWriter) -> None:
        super().__init__()
        import codecs

        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, b: Any) -> int:
        data = bytes(b)
        text = self._decoder.decode(data)
        if text:
            self._text.write(text)
        return len(data)

    def flush(self) -> None:
        self._text.flush()

    def close(self) -> None:
        self.flush()

    def fileno(self) -> int:
        return self._text.fileno()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


class StdinGate:
    """``input()`` and ``getpass.getpass()`` for user code.

    With ``allow`` False (the default for every cell) both raise ``EOFError`` at once, naming
    ``allowStdin``; they never hang. With ``allow`` True they flush the output writers and
    call ``request(prompt, password)``, which returns the line (a trailing newline is removed)
    or raises ``EOFError``.
    """

    def __init__(self, request: Callable[[str, bool], str] | None,
                 flush: Callable[[], None]) -> None:
        self.allow = False
        self._request = request
        self._flush = flush

    def read(self, prompt: Any, password: bool) -> str:
        self._flush()
        if not self.allow or self._request is None:
            raise EOFError(NO_STDIN)
        text = self._request(str(prompt), password)
        if text is None:
            raise EOFError("end of input")
        return text[:-1] if text.endswith("\n") else text

    def make_input(self) -> Callable[..., str]:
        gate = self

        def input(prompt: object = "", /) -> str:  # noqa: A001 - replaces the builtin
            """Read a line from the client (``allowStdin: true``); EOFError otherwise."""
            return gate.read(prompt, False)

        return input

    def make_getpass(self) -> Callable[..., str]:
        gate = self

        def getpass(prompt: str = "Password: ", stream: Any = None) -> str:
            """Read a password from the client (``allowStdin: true``); EOFError otherwise."""
            return gate.read(prompt, True)

        return getpass
