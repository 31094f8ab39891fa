"""Sans-IO message framers for the stdio transport (PROTOCOL.md section 1).

Theory of operation: a framer turns a byte stream into message bodies and bodies into bytes.
``feed(data)`` takes any chunk (one byte, half a header, a thousand messages) and returns the
bodies completed by it, in order, interleaved with ``FrameError`` values where the input was
bad; ``close()`` says the input ended and returns what that completes; ``frame(body)`` returns
the bytes that carry one body. Framers never read, write, block or raise on input: the caller
owns the file descriptors, and bad input is data (a ``FrameError``), not an exception.

Invariants:

- Memory is bounded: between calls a framer holds at most ``max_size`` bytes of a partial
  message plus at most ``max_header_size`` bytes of a partial LSP header block
  (``buffered`` reports it). An oversized message is reported once, as soon as it is known to
  be too large, and its remaining bytes are discarded as they arrive, never buffered.
- A ``FrameError`` with ``fatal=False`` costs one message; the stream stays usable. With
  ``fatal=True`` the framer cannot find the next message boundary (an LSP header block without
  a valid ``Content-Length``, or one larger than ``max_header_size``): it discards all further
  input, and the caller should report the error and stop reading.
- ``close()`` resets the framer to its initial state.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_HEADER_SIZE = 8 * 1024

_BOM = b"\xef\xbb\xbf"
_WS = frozenset(b" \t\r\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")  # match starts where the last header line ends
_UTF8 = (b"utf-8", b"utf8")

FramingKind = Literal["ndjson", "lsp"]


class FrameError(msgspec.Struct, frozen=True):
    """Bad input found by a framer (a value in ``feed``'s output, not an exception).

    ``fatal`` is True iff the stream cannot be resynchronised; see the module docstring.
    """

    message: str
    fatal: bool = False


def _too_large(size: int | None, limit: int) -> FrameError:
    what = "message" if size is None else f"message of {size} bytes"
    return FrameError(f"{what} exceeds the limit of {limit} bytes; skipped")


def _show(raw: bytes) -> str:
    return repr(raw.strip()[:60].decode("latin-1"))


class NdjsonFramer:
    """Newline-delimited JSON: one message per line (MCP's stdio transport).

    ``feed`` returns each complete line without its ``\\n`` (and a ``\\r`` before it); empty
    and whitespace-only lines are skipped. A line whose bytes before the ``\\n`` exceed
    ``max_size`` gives one ``FrameError`` and is skipped up to the next newline; the stream
    stays usable. ``close()`` returns a final unterminated line as a message.
    """

    kind: FramingKind = "ndjson"

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()  # the current partial line, at most max_size bytes
        self._skipping = False  # True while discarding the rest of an oversized line

    @property
    def buffered(self) -> int:
        """Bytes held for a partial message (never more than ``max_size``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Buffer ``data``; return the messages and errors it completes, in order."""
        if type(data) is not bytes:
            data = bytes(data)
        out: list[bytes | FrameError] = []
        start = 0
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._skipping = False
            start = nl + 1
        buf = self._buf
        if buf:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._keep(data, start, out)
                return out
            size = len(buf) + nl - start
            if size > self.max_size:
                out.append(_too_large(size, self.max_size))
            else:
                buf += memoryview(data)[start:nl]
                self._emit(bytes(buf), out)
            buf.clear()
            start = nl + 1
        lines = (data[start:] if start else data).split(b"\n")
        tail = lines.pop()
        max_size = self.max_size
        for line in lines:
            if len(line) > max_size:
                out.append(_too_large(len(line), max_size))
            elif line and not line.isspace():
                out.append(line[:-1] if line[-1] == 13 else line)
        if tail:
            self._keep(tail, 0, out)
        return out

    def close(self) -> list[bytes | FrameError]:
        """End of input: return the final unterminated line, if any; reset the framer."""
        out: list[bytes | FrameError] = []
        if self._buf and not self._skipping:
            self._emit(bytes(self._buf), out)
        self._buf.clear()
        self._skipping = False
        return out

    def frame(self, body: bytes) -> bytes:
        """The bytes carrying ``body``; raises ``ValueError`` if it holds a raw newline."""
        if b"\n" in body:
            raise ValueError("an NDJSON message cannot contain a raw newline")
        return body + b"\n"

    def _keep(self, data: bytes, start: int, out: list[bytes | FrameError]) -> None:
        # Buffer an unterminated piece, or report the line as oversized and start skipping.
        if len(self._buf) + len(data) - start > self.max_size:
            out.append(_too_large(None, self.max_size))
            self._buf.clear()
            self._skipping = True
        else:
            self._buf += memoryview(data)[start:]

    @staticmethod
    def _emit(line: bytes, out: list[bytes | FrameError]) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        if line and not line.isspace():
            out.append(line)


class LspFramer:
    """LSP base protocol: ``Content-Length: N\\r\\n`` [``Content-Type: ...\\r\\n``] ``\\r\\n``.

    Header names are case-insensitive, lines may end in ``\\n`` alone, unknown headers are
    ignored, whitespace between messages is skipped. ``N`` counts bytes. A ``Content-Type``
    whose ``charset`` is not ``utf-8``/``utf8``, or ``N > max_size``, gives a non-fatal
    ``FrameError`` and the body is skipped. A header block with a malformed line, without a
    valid ``Content-Length``, with two different ones, or longer than ``max_header_size`` gives
    a fatal ``FrameError``. ``Content-Length: 0`` yields ``b""`` (the JSON layer answers
    -32700). ``close()`` inside a header block or body gives a non-fatal ``FrameError``.
    """

    kind: FramingKind = "lsp"

    def __init__(
        self, max_size: int = DEFAULT_MAX_SIZE, max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    ) -> None:
        self.max_size = max_size
        self.max_header_size = max_header_size
        self._buf = bytearray()  # a partial header block, or a partial body
        self._length = -1  # length of the body being read; -1 while reading headers
        self._skip = 0  # bytes of a refused body still to discard
        self._dead = False  # True after a fatal error

    @property
    def buffered(self) -> int:
        """Bytes held for a partial header block or body."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Buffer ``data``; return the messages and errors it completes, in order."""
        out: list[bytes | FrameError] = []
        if self._dead:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
            elif self._length >= 0:
                need = self._length - len(buf)
                if not buf and n - i >= need:
                    out.append(data[i : i + need])
                    i += need
                else:
                    k = min(need, n - i)
                    buf += memoryview(data)[i : i + k]
                    i += k
                    if k < need:
                        break
                    out.append(bytes(buf))
                    buf.clear()
                self._length = -1
            elif not buf:
                while i < n and data[i] in _WS:
                    i += 1
                if i == n:
                    break
                m = _HEADER_END.search(data, i, i + self.max_header_size)
                if m is None:
                    if n - i >= self.max_header_size:
                        self._fail(out, "header block too large")
                        break
                    buf += memoryview(data)[i:]
                    break
                block, i = data[i : m.start()], m.end()
                length = self._start_body(block, out)
                if 0 < length <= n - i:  # the usual case: the whole body is here
                    out.append(data[i : i + length])
                    i += length
                elif length > 0:
                    self._length = length
            else:
                old = len(buf)
                take = min(n - i, self.max_header_size - old)
                buf += memoryview(data)[i : i + take]
                m = _HEADER_END.search(buf, max(0, old - 3))
                if m is None:
                    if len(buf) >= self.max_header_size:
                        self._fail(out, "header block too large")
                        break
                    i += take
                    continue
                block = bytes(buf[: m.start()])
                i += m.end() - old
                buf.clear()
                self._length = self._start_body(block, out)
            if self._dead:
                break
        return out

    def close(self) -> list[bytes | FrameError]:
        """End of input: report a message cut short, if any; reset the framer."""
        out: list[bytes | FrameError] = []
        if not self._dead:
            if self._length >= 0:
                got, size = len(self._buf), self._length
                out.append(FrameError(f"input ended {got} bytes into a {size}-byte body"))
            elif self._buf and not self._skip:
                out.append(FrameError("input ended inside a header block"))
        self._buf.clear()
        self._length = -1
        self._skip = 0
        self._dead = False
        return out

    def frame(self, body: bytes) -> bytes:
        """The bytes carrying ``body``: a ``Content-Length`` header, a blank line, the body."""
        return b"Content-Length: %d\r\n\r\n%b" % (len(body), body)

    def _fail(self, out: list[bytes | FrameError], message: str) -> None:
        out.append(FrameError(message, fatal=True))
        self._dead = True
        self._buf.clear()

    def _start_body(self, block: bytes, out: list[bytes | FrameError]) -> int:
        # Parse one header block (without its terminating blank line); return the length of
        # the body to read, or -1 (a body to skip, an empty body, or a fatal error).
        length: int | None = None
        charset: bytes | None = None
        digits = block[16:]
        if block[:16] == b"Content-Length: " and digits.isdigit() and len(digits) <= 18:
            lines: list[bytes] = []  # the usual single header: skip the general parse
            length = int(digits)
        else:
            lines = block.split(b"\n")
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon:
                self._fail(out, f"malformed header line {_show(line)}")
                return -1
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    self._fail(out, f"invalid Content-Length {_show(value)}")
                    return -1
                if length is not None and length != int(value):
                    self._fail(out, "conflicting Content-Length headers")
                    return -1
                length = int(value)
            elif name == b"content-type":
                for param in value.split(b";")[1:]:
                    key, eq, val = param.partition(b"=")
                    if eq and key.strip().lower() == b"charset":
                        charset = val.strip().strip(b"\"'").lower()
        if length is None:
            self._fail(out, "header block without Content-Length")
            return -1
        if charset is not None and charset not in _UTF8:
            out.append(FrameError(f"unsupported charset {_show(charset)}; body skipped"))
            self._skip = length
        elif length > self.max_size:
            out.append(_too_large(length, self.max_size))
            self._skip = length
        elif length == 0:
            out.append(b"")
        else:
            return length
        return -1


_NDJSON = NdjsonFramer(0)  # stateless use only: frame() before detection


class AutoFramer:
    """Chooses NDJSON or LSP framing from the first non-whitespace byte of the stream.

    A UTF-8 BOM (and whitespace) before the first message is skipped. ``{`` or ``[`` selects
    NDJSON, an ASCII letter LSP, anything else NDJSON (the JSON layer answers that line with
    -32700). ``forced`` (``"ndjson"`` or ``"lsp"``) skips detection. ``kind`` is None until
    detection; ``frame`` uses NDJSON until then. ``close()`` resets detection too.
    ``max_size`` and ``max_header_size`` go to the framer chosen.
    """

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_SIZE,
        forced: FramingKind | None = None,
        *,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        if forced not in (None, "ndjson", "lsp"):
            raise ValueError(f"unknown framing {forced!r}")
        self.max_size = max_size
        self.max_header_size = max_header_size
        self.forced = forced
        self._inner: NdjsonFramer | LspFramer | None = None
        self._started = False  # True once a byte past the leading whitespace/BOM arrived
        self._pending = b""  # a proper prefix of the BOM at the start of the stream
        self._reset()

    @property
    def kind(self) -> FramingKind | None:
        """``"ndjson"`` or ``"lsp"`` once known (at once when forced), else None."""
        return None if self._inner is None else self._inner.kind

    @property
    def buffered(self) -> int:
        """Bytes held for a partial message."""
        return len(self._pending) + (0 if self._inner is None else self._inner.buffered)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Buffer ``data``; return the messages and errors it completes, in order."""
        if self._started:
            return self._inner.feed(data)  # type: ignore[union-attr]
        if type(data) is not bytes:
            data = bytes(data)
        if self._pending:
            data = self._pending + data
            self._pending = b""
        i, n = 0, len(data)
        while True:
            while i < n and data[i] in _WS:
                i += 1
            if not data.startswith(_BOM, i):
                break
            i += 3
        if i == n:
            return []
        if n - i < 3 and _BOM.startswith(data[i:]):
            self._pending = bytes(data[i:])
            return []
        self._started = True
        if self._inner is None:
            first = data[i]
            self._inner = self._make("lsp" if 65 <= first <= 90 or 97 <= first <= 122 else "ndjson")
        return self._inner.feed(data[i:])

    def close(self) -> list[bytes | FrameError]:
        """End of input: what the framer in use completes (see its ``close``); reset."""
        out: list[bytes | FrameError] = [self._pending] if self._pending else []
        if self._inner is not None:
            out.extend(self._inner.close())
        self._reset()
        return out

    def frame(self, body: bytes) -> bytes:
        """The bytes carrying ``body`` in the detected framing (NDJSON before detection)."""
        return (self._inner or _NDJSON).frame(body)

    def _make(self, kind: FramingKind) -> NdjsonFramer | LspFramer:
        if kind == "lsp":
            return LspFramer(self.max_size, self.max_header_size)
        return NdjsonFramer(self.max_size)

    def _reset(self) -> None:
        self._inner = None if self.forced is None else self._make(self.forced)
        self._started = False
        self._pending = b""
