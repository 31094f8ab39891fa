"""Output capture and input for user code: ``sys.stdout``/``sys.stderr`` writers, ``input()``.

``StreamWriter`` is line-buffered with coalescing: ``write`` only buffers; the buffer goes to
the sink (``emit_stream(name, text)``) when a written piece contains a newline, when it passes
``limit`` characters (~8 KiB), and on ``flush()`` (the executor flushes at cell start, cell end
and before every display event). So one ``print`` is one sink call, and a partial line waits
for its newline, the way a terminal's line buffering works (``print(..., flush=True)`` sends it
at once). Text reaching the sink is always valid UTF-8: lone surrogates are backslash-escaped.
Writes may come from any thread; a reentrant lock keeps each stream's order.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

StreamSink = Callable[[str, str], None]

NO_STDIN = "stdin is not enabled for this eval (pass allowStdin: true to read input)"


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
    """A text stream for ``sys.stdout``/``sys.stderr`` that forwards to a sink.

    ``fileno()`` returns the real descriptor (1 or 2; the supervisor reads those pipes), so
    libraries that want a file descriptor work. ``close()`` only flushes: user code cannot
    close the session's output.
    """

    encoding = "utf-8"
    errors = "strict"
    line_buffering = True
    newlines = None
    mode = "w"

    def __init__(self, name: str, fd: int, sink: StreamSink, limit: int = 8192) -> None:
        super().__init__()
        self.stream = name
        self.name = f"<{name}>"
        self._fd = fd
        self._sink = sink
        self._limit = limit
        self._buf: list[str] = []
        self._size = 0
        self._lock = threading.RLock()
        self._binary: BinaryWriter | None = None

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s:
            return 0
        with self._lock:
            self._buf.append(s)
            self._size += len(s)
            if "\n" in s or self._size >= self._limit:
                self._flush_locked()
        return len(s)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buf:
            return
        text = self._buf[0] if len(self._buf) == 1 else "".join(self._buf)
        self._buf.clear()
        self._size = 0
        self._sink(self.stream, clean(text))

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
