"""The sans-IO framers: any chunking gives the same messages; bad input never raises and
never makes a framer hold more than its limits."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellbox.protocol.framing import (
    DEFAULT_MAX_SIZE,
    AutoFramer,
    FrameError,
    LspFramer,
    NdjsonFramer,
)

BOM = b"\xef\xbb\xbf"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(
    msgspec.json.encode
)
json_bodies = json_objects | st.lists(json_values, max_size=4).map(msgspec.json.encode)
# Anything without a newline that is not blank and does not end in \r is an NDJSON body.
ndjson_bodies = json_bodies | st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(b"\n", b"x").replace(b"\r", b"y")
).filter(lambda b: not b.isspace())


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def run(framer, chunks: list[bytes]) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out + framer.close()


def lsp_frame(body: bytes) -> bytes:
    return LspFramer().frame(body)


# ---------------------------------------------------------------------------------------------
# Any messages, any chunk boundaries


@given(st.lists(ndjson_bodies, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
def test_ndjson_roundtrip_at_any_boundaries(bodies, cuts):
    framer = NdjsonFramer()
    stream = b"".join(framer.frame(b) for b in bodies)
    assert run(framer, chunked(stream, cuts)) == bodies


@given(
    st.lists(st.binary(max_size=40) | json_bodies, max_size=8),
    st.lists(st.integers(0), max_size=12),
)
def test_lsp_roundtrip_at_any_boundaries(bodies, cuts):
    framer = LspFramer()
    stream = b"".join(framer.frame(b) for b in bodies)
    assert run(framer, chunked(stream, cuts)) == bodies


@given(
    st.sampled_from(["ndjson", "lsp"]),
    st.sampled_from([b"", BOM, b" \r\n", BOM + b"\n\t "]),
    st.lists(json_bodies, min_size=1, max_size=6),
    st.lists(st.integers(0), max_size=12),
)
def test_auto_detects_and_roundtrips(kind, prefix, bodies, cuts):
    writer = NdjsonFramer() if kind == "ndjson" else LspFramer()
    stream = prefix + b"".join(writer.frame(b) for b in bodies)
    framer = AutoFramer()
    out: list = []
    for chunk in chunked(stream, cuts):
        out += framer.feed(chunk)
    assert framer.kind == kind
    assert out + framer.close() == bodies
    assert framer.kind is None  # close() resets detection


@given(st.lists(ndjson_bodies, min_size=1, max_size=5))
def test_many_messages_in_one_chunk_and_byte_at_a_time(bodies):
    for framer, frame in ((NdjsonFramer(), NdjsonFramer().frame), (LspFramer(), lsp_frame)):
        stream = b"".join(frame(b) for b in bodies)
        assert run(framer, [stream]) == bodies
        assert run(framer, [bytes([b]) for b in stream]) == bodies


# ---------------------------------------------------------------------------------------------
# Arbitrary input: never raises, memory bounded

lsp_pieces = st.sampled_from(
    [
        b"Content-Length: 3\r\n",
        b"content-length: 40\r\n",
        b"Content-Length: 99999999\r\n",
        b"Content-Type: application/json; charset=latin-1\r\n",
        b"Content-Type: application/json; charset=utf-8\r\n",
        b"\r\n",
        b"\n",
        b"{}\n",
        b"X: y\r\n",
        BOM,
    ]
)
noise = st.lists(st.binary(max_size=30) | lsp_pieces, max_size=20).map(b"".join)


@settings(max_examples=300)
@given(noise, st.lists(st.integers(0), max_size=10))
def test_arbitrary_bytes_never_raise_and_buffers_stay_bounded(data, cuts):
    max_size, max_header = 16, 32
    framers = [
        NdjsonFramer(max_size),
        LspFramer(max_size, max_header_size=max_header),
        AutoFramer(max_size, max_header_size=max_header),
        AutoFramer(max_size, forced="lsp", max_header_size=max_header),
    ]
    for framer in framers:
        out = []
        for chunk in chunked(data, cuts):
            out += framer.feed(chunk)
            # A partial BOM (at most 2 bytes) may wait before detection.
            assert framer.buffered <= max(max_size, max_header) + 2
        out += framer.close()
        assert framer.buffered == 0
        for item in out:
            assert isinstance(item, (bytes, FrameError))
            if isinstance(item, bytes):
                assert len(item) <= max_size


def test_a_huge_lsp_body_is_skipped_without_buffering():
    framer = LspFramer(max_size=1024)
    out = framer.feed(b"Content-Length: 10000000\r\n\r\n")
    assert out == [FrameError("message of 10000000 bytes exceeds the limit of 1024 bytes; skipped")]
    for _ in range(9):
        assert framer.feed(b"x" * 1_000_000) == []
        assert framer.buffered == 0
    assert framer.feed(b"y" * 1_000_000 + lsp_frame(b"{}")) == [b"{}"]


def test_a_huge_ndjson_line_is_skipped_without_buffering():
    framer = NdjsonFramer(max_size=1024)
    out = framer.feed(b"x" * 1000)
    assert out == [] and framer.buffered == 1000
    out = framer.feed(b"x" * 100)
    assert len(out) == 1 and isinstance(out[0], FrameError) and not out[0].fatal
    for _ in range(5):
        assert framer.feed(b"x" * 100_000) == []
        assert framer.buffered == 0
    assert framer.feed(b'xx\n{"ok":1}\n') == [b'{"ok":1}']


def test_ndjson_oversized_complete_line_then_recovery():
    framer = NdjsonFramer(max_size=4)
    out = framer.feed(b"12345\n1234\n" + b"9" * 9 + b"\nab\n")
    assert [type(x) for x in out] == [FrameError, bytes, FrameError, bytes]
    assert out[1] == b"1234" and out[3] == b"ab"
    assert not any(x.fatal for x in out if isinstance(x, FrameError))


def test_ndjson_oversized_across_buffer_boundary():
    framer = NdjsonFramer(max_size=4)
    assert framer.feed(b"123") == []
    out = framer.feed(b"45\nok\n")
    assert isinstance(out[0], FrameError) and out[1:] == [b"ok"]


def test_default_limits():
    assert NdjsonFramer().max_size == DEFAULT_MAX_SIZE == 64 * 1024 * 1024
    assert LspFramer().max_size == DEFAULT_MAX_SIZE


# ---------------------------------------------------------------------------------------------
# NDJSON details


def test_ndjson_strips_crlf_and_skips_blank_lines():
    framer = NdjsonFramer()
    assert framer.feed(b'\n\r\n  \n\t\r\n{"a":1}\r\n[2]\n') == [b'{"a":1}', b"[2]"]


def test_ndjson_close_returns_unterminated_line_and_resets():
    framer = NdjsonFramer()
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.close() == [b'{"b"']
    assert framer.close() == []
    assert framer.feed(b"   ") == [] and framer.close() == []
    assert framer.feed(b"x\r") == [] and framer.close() == [b"x"]


def test_ndjson_frame():
    assert NdjsonFramer().frame(b"{}") == b"{}\n"
    with pytest.raises(ValueError):
        NdjsonFramer().frame(b'{"a":\n1}')


def test_ndjson_accepts_bytearray_and_memoryview():
    framer = NdjsonFramer()
    assert framer.feed(bytearray(b"[1]\n")) == [b"[1]"]
    assert framer.feed(memoryview(b"[2]\n[3")) == [b"[2]"]
    assert all(type(x) is bytes for x in framer.close())


# ---------------------------------------------------------------------------------------------
# LSP details


def test_lsp_header_split_at_every_position():
    message = (
        b"Content-Length: 7\r\n"
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n"
        b'{"a":1}'
    )
    for cut in range(len(message) + 1):
        framer = LspFramer()
        assert framer.feed(message[:cut]) + framer.feed(message[cut:]) == [b'{"a":1}'], cut


@pytest.mark.parametrize(
    "header",
    [b"content-length: 2", b"CONTENT-LENGTH:2", b"Content-length :  2 ", b"cOnTeNt-LeNgTh: 2"],
)
def test_lsp_header_names_case_insensitive(header):
    assert run(LspFramer(), [header + b"\r\n\r\n{}"]) == [b"{}"]


def test_lsp_bare_newlines_unknown_headers_and_whitespace_between_messages():
    stream = b"X-Foo: bar\nContent-Length: 2\n\n{}\r\n\r\nContent-Length: 2\r\n\r\n[]"
    assert run(LspFramer(), [stream]) == [b"{}", b"[]"]


def test_lsp_length_counts_bytes_not_characters():
    body = '{"t":"é€😀"}'.encode()
    assert run(LspFramer(), [lsp_frame(body) * 2]) == [body, body]


@pytest.mark.parametrize("charset", [b"utf-8", b"UTF-8", b"utf8", b'"utf-8"'])
def test_lsp_utf8_charsets_accepted(charset):
    stream = b"Content-Type: application/json; charset=%b\r\nContent-Length: 2\r\n\r\n{}" % charset
    assert run(LspFramer(), [stream]) == [b"{}"]


@pytest.mark.parametrize("charset", [b"latin-1", b"utf-16", b"ascii", b""])
def test_lsp_other_charsets_refused_and_body_skipped(charset):
    bad = b"Content-Length: 4\r\nContent-Type: text/plain; charset=%b\r\n\r\n{}{}" % charset
    out = run(LspFramer(), [bad + lsp_frame(b"[]")])
    assert len(out) == 2
    assert isinstance(out[0], FrameError) and not out[0].fatal and "charset" in out[0].message
    assert out[1] == b"[]"


def test_lsp_content_type_without_charset_accepted():
    stream = b"Content-Type: application/vscode-jsonrpc\r\nContent-Length: 2\r\n\r\n{}"
    assert run(LspFramer(), [stream]) == [b"{}"]


def test_lsp_zero_length_body():
    assert run(LspFramer(), [b"Content-Length: 0\r\n\r\n" + lsp_frame(b"{}")]) == [b"", b"{}"]


@pytest.mark.parametrize(
    "stream",
    [
        b"Content-Type: application/json\r\n\r\n{}",  # no Content-Length
        b"Content-Length: abc\r\n\r\n{}",
        b"Content-Length: -2\r\n\r\n{}",
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"garbage without colon\r\n\r\n{}",
        b'{"jsonrpc": "2.0"}\n\n',
    ],
)
def test_lsp_unrecoverable_headers_are_fatal_and_stop_the_framer(stream):
    framer = LspFramer()
    out = framer.feed(stream)
    assert len(out) == 1 and isinstance(out[0], FrameError) and out[0].fatal
    assert framer.feed(lsp_frame(b"{}")) == []
    assert framer.buffered == 0
    assert framer.close() == []
    assert framer.feed(lsp_frame(b"{}")) == [b"{}"]  # close() resets


def test_lsp_header_block_size_is_bounded():
    framer = LspFramer(max_header_size=64)
    assert framer.feed(b"X-Long: " + b"a" * 40) == []
    out = framer.feed(b"a" * 40)
    assert len(out) == 1 and out[0].fatal
    assert framer.buffered == 0
    framer = LspFramer(max_header_size=64)
    out = framer.feed(b"X-Long: " + b"a" * 100 + b"\r\n\r\n")
    assert len(out) == 1 and out[0].fatal


def test_lsp_close_inside_a_message_reports_it():
    framer = LspFramer()
    framer.feed(b"Content-Length: 10\r\n\r\n{}")
    out = framer.close()
    assert len(out) == 1 and isinstance(out[0], FrameError)
    assert "2 bytes into a 10-byte" in out[0].message
    framer.feed(b"Content-Len")
    out = framer.close()
    assert len(out) == 1 and "header" in out[0].message
    assert framer.close() == []


def test_lsp_frame():
    assert LspFramer().frame("é".encode()) == b"Content-Length: 2\r\n\r\n\xc3\xa9"


# ---------------------------------------------------------------------------------------------
# Detection


@pytest.mark.parametrize(
    ("first", "kind"),
    [(b"{", "ndjson"), (b"[", "ndjson"), (b"C", "lsp"), (b"c", "lsp"), (b"z", "lsp"),
     (b"5", "ndjson"), (b'"', "ndjson"), (b"\x00", "ndjson"), (b"\xc3", "ndjson")],
)
def test_detection_by_first_byte(first, kind):
    framer = AutoFramer()
    assert framer.kind is None
    framer.feed(b" \n\t" + first)
    assert framer.kind == kind


def test_non_json_first_line_goes_to_json_layer_as_ndjson():
    framer = AutoFramer()
    assert framer.feed(b"5 not json\n{}\n") == [b"5 not json", b"{}"]
    assert framer.kind == "ndjson"


def test_whitespace_only_keeps_detection_open():
    framer = AutoFramer()
    assert framer.feed(b"\r\n  \n") == [] and framer.kind is None
    assert framer.frame(b"{}") == b"{}\n"  # NDJSON until detected
    assert framer.feed(b"Content-Length: 2\r\n\r\n{}") == [b"{}"]
    assert framer.kind == "lsp"
    assert framer.frame(b"{}") == b"Content-Length: 2\r\n\r\n{}"


def test_bom_is_skipped_whole_or_split():
    stream = BOM + b'{"a":1}\n'
    for chunks in ([stream], [bytes([b]) for b in stream], [BOM[:2], BOM[2:] + b'{"a":1}\n']):
        framer = AutoFramer()
        assert run(framer, chunks) == [b'{"a":1}']


def test_bom_then_lsp():
    framer = AutoFramer()
    assert framer.feed(BOM + lsp_frame(b"{}")) == [b"{}"] and framer.kind == "lsp"


def test_bom_prefix_that_is_not_a_bom_selects_ndjson():
    framer = AutoFramer()
    assert framer.feed(b"\xef") == [] and framer.kind is None
    assert framer.feed(b"\xbbx\n") == [b"\xef\xbbx"] and framer.kind == "ndjson"
    framer = AutoFramer()
    framer.feed(b"\xef\xbb")
    assert framer.close() == [b"\xef\xbb"]


@pytest.mark.parametrize("forced", ["ndjson", "lsp"])
def test_forced_framing_skips_detection(forced):
    framer = AutoFramer(forced=forced)
    assert framer.kind == forced
    body = b"{}"
    writer = NdjsonFramer() if forced == "ndjson" else LspFramer()
    assert framer.feed(BOM + writer.frame(body)) == [body]
    assert framer.frame(body) == writer.frame(body)


def test_forced_lsp_rejects_ndjson_input():
    framer = AutoFramer(forced="lsp")
    out = framer.feed(b'{"jsonrpc":"2.0"}\n\n')
    assert len(out) == 1 and out[0].fatal


def test_unknown_forced_kind():
    with pytest.raises(ValueError):
        AutoFramer(forced="xml")  # type: ignore[arg-type]


def test_auto_passes_max_size_on():
    framer = AutoFramer(max_size=4)
    out = framer.feed(b"[123456]\n[1]\n")
    assert isinstance(out[0], FrameError) and out[1:] == [b"[1]"]
    framer = AutoFramer(max_size=4)
    out = framer.feed(b"Content-Length: 5\r\n\r\n12345" + lsp_frame(b"[1]"))
    assert isinstance(out[0], FrameError) and out[1:] == [b"[1]"]


def test_ndjson_partial_line_of_exactly_max_size_is_kept():
    framer = NdjsonFramer(max_size=4)
    assert framer.feed(b"1234") == []  # a whole line yet, unterminated: within the limit
    assert framer.feed(b"\n") == [b"1234"]
