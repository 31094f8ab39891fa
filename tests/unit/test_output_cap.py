"""Output caps: head live, tail kept, marker, exact dropped counts, UTF-8 safety."""

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


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=1, max_value=200))
def test_dropped_is_exact_and_bounded(chunks, limit):
    cap = StreamCap(limit)
    total = sum(map(len, chunks))
    live_bytes = 0
    for c in chunks:
        cap.feed(c)
        assert len(cap.tail) <= limit - limit // 2
    live_bytes = min(total, limit // 2)
    marker, tail = cap.finish()
    if total <= limit:
        assert cap.dropped == 0 and marker == ""
    else:
        assert cap.dropped >= total - limit
        assert cap.dropped <= total - limit + 3  # at most a partial character more
        assert live_bytes == limit // 2
