"""Output caps: head live, tail kept, marker, exact dropped counts, UTF-8 safety."""

import codecs
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellbox.supervisor.machine import OutputCap as StreamCap


def run(cap, chunks):
    live = "".join(cap.feed(c) for c in chunks)
    marker, tail = cap.finish()
    return live, marker, tail


def test_under_limit_everything_passes():
    cap = StreamCap(100)
    live, marker, tail = run(cap, [b"a" * 30, b"b" * 30])
    assert live + tail == "a" * 30 + "b" * 30 and marker == "" and cap.dropped == 0


def test_over_limit_head_and_tail():
    cap = StreamCap(10)
    live, marker, tail = run(cap, [b"0123456789", b"abcdefghij"])
    assert live == "01234" and tail == "fghij" and cap.dropped == 10
    assert "10 bytes" in marker


def test_multibyte_split_across_chunks():
    data = "é☃".encode() * 3
    cap = StreamCap(1000)
    live, marker, tail = run(cap, [data[i : i + 1] for i in range(len(data))])
    assert live + tail == "é☃" * 3


def _marker_number(marker):
    (number,) = re.fullmatch(r"\n\[cellbox: (\d+) bytes of output dropped here\]\n", marker).groups()
    return int(number)


def _clean_cut(data, at):
    """True iff cutting ``data`` at byte ``at`` splits no character (a UTF-8 decoder fed
    ``data[:at]`` holds nothing back)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data[:at])
    return decoder.getstate()[0] == b""


def _continuation_bytes_at(data, start):
    """How many UTF-8 continuation bytes (at most 4) start ``data[start:]``: the cap skips them
    so the kept tail starts on a character."""
    n = 0
    while n < 4 and start + n < len(data) and data[start + n] & 0xC0 == 0x80:
        n += 1
    return n


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=1, max_value=200))
def test_accounting_is_exact(chunks, limit):
    """For any bytes in any chunks: the head is the first ``limit // 2`` bytes, the tail
    exactly the last ones (less the continuation bytes it starts with, which count as
    dropped), head + tail + dropped == fed, and the marker names ``dropped``."""
    cap = StreamCap(limit)
    data = b"".join(chunks)
    fed = len(data)
    live = ""
    for c in chunks:
        live += cap.feed(c)
        assert len(cap.tail) <= limit - limit // 2 + 3  # the window (+ a character the head cut)
    marker, tail = cap.finish()
    head_bytes = limit // 2
    window = limit - head_bytes
    if fed >= head_bytes:  # the head ends before a character it would cut; the window grows
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.decode(data[:head_bytes])
        cut = len(decoder.getstate()[0])
        head_bytes -= cut
        window += cut
    clean = _clean_cut(data, head_bytes)
    if fed <= limit:
        assert (cap.dropped, marker) == (0, "")
        if clean:
            assert live + tail == data.decode("utf-8", "replace")
        return
    skipped = _continuation_bytes_at(data, fed - window)
    tail_bytes = window - skipped
    if clean:
        assert live == data[:head_bytes].decode("utf-8", "replace")
    assert tail == data[fed - tail_bytes :].decode("utf-8", "replace")
    assert head_bytes + tail_bytes + cap.dropped == fed
    assert head_bytes + tail_bytes + skipped == min(fed, limit)
    assert _marker_number(marker) == cap.dropped


@given(st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=50), max_size=30),
       st.integers(min_value=1, max_value=200))
def test_ascii_delivered_is_min_of_fed_and_limit(texts, limit):
    """Where every byte is a character, delivered == min(fed, limit) exactly."""
    cap = StreamCap(limit)
    live = "".join(cap.feed(t.encode()) for t in texts)
    marker, tail = cap.finish()
    fed = sum(map(len, texts))
    delivered = len(live) + len(tail)
    assert delivered == min(fed, limit)
    assert delivered + cap.dropped == fed
    assert live + tail == ("".join(texts) if fed <= limit else "".join(texts)[: limit // 2] + "".join(texts)[fed - (limit - limit // 2) :])
    assert (_marker_number(marker) if marker else 0) == cap.dropped


def test_head_ending_inside_a_character_at_a_read_boundary_loses_no_byte_uncounted():
    cap = StreamCap(4)  # head 2 bytes, window 2 bytes
    data = [b"a\xc3", b"\xa9bcdef"]  # the head ends inside "é", where a read ended
    live = "".join(cap.feed(c) for c in data)
    marker, tail = cap.finish()
    assert len((live + tail).encode()) + cap.dropped == sum(map(len, data))
    assert _marker_number(marker) == cap.dropped


def test_head_ending_inside_a_character_shows_no_replacement_character():
    cap = StreamCap(4)
    live = cap.feed("aébcdef".encode())  # the head ends inside "é", within one read
    marker, tail = cap.finish()
    assert "\ufffd" not in live
    assert len((live + tail).encode()) + cap.dropped == len("aébcdef".encode())
