"""Output caps for one stream of one eval: head streamed live, tail kept, middle dropped.

Theory of operation (PROTOCOL.md section 5, "Output caps"): the first ``limit // 2`` bytes pass
through at once; later bytes go into a sliding window of the last ``limit - limit // 2`` bytes.
When the eval ends, ``finish`` returns a marker line (if anything was dropped) and the window.
Invariants: at most ``limit`` bytes of user output reach the client per stream, the marker not
counted; ``dropped`` is exactly the number of bytes that never will; memory stays bounded by the
window. Text is decoded as UTF-8 incrementally (invalid bytes become U+FFFD), so a character
split across reads is never mangled.
"""

from __future__ import annotations

import codecs


class StreamCap:
    __slots__ = ("head_left", "tail_size", "tail", "dropped", "_decoder")

    def __init__(self, limit: int) -> None:
        self.head_left = limit // 2
        self.tail_size = limit - limit // 2
        self.tail = bytearray()
        self.dropped = 0
        self._decoder: codecs.IncrementalDecoder | None = None  # most evals print nothing

    def feed(self, data: bytes) -> str:
        """Take bytes the child wrote; return the text to stream now (may be empty)."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if self.head_left >= len(data):
            self.head_left -= len(data)
            return self._decoder.decode(data)
        live = b""
        if self.head_left:
            live, data = data[: self.head_left], data[self.head_left :]
            self.head_left = 0
        tail = self.tail
        tail += data
        excess = len(tail) - self.tail_size
        if excess > 0:
            del tail[:excess]
            self.dropped += excess
        return self._decoder.decode(live, final=True) if live else ""

    def finish(self) -> tuple[str, str]:
        """End of the eval: ``(marker, tail_text)``; the marker is empty if nothing was dropped."""
        tail = bytes(self.tail)
        self.tail.clear()
        if self.dropped:
            # Start the window on a character boundary: skip UTF-8 continuation bytes.
            start = 0
            while start < len(tail) and start < 4 and (tail[start] & 0xC0) == 0x80:
                start += 1
            self.dropped += start
            tail = tail[start:]
            marker = f"\n[cellbox: {self.dropped} bytes of output dropped here]\n"
            return marker, tail.decode("utf-8", "replace")
        if self._decoder is None:
            return "", ""
        return "", self._decoder.decode(tail, final=True)
