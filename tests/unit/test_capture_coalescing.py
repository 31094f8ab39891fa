"""Coalesced output: the first line goes at once, a burst goes in large chunks, nothing waits
longer than the flusher's delay. Waits poll under a deadline; no test sleeps for state."""

from __future__ import annotations

import signal
import threading
import time

from cellbox.child.capture import StreamWriter
from tests.unit.executor_harness import h  # noqa: F401 - fixture


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, name: str, text: str) -> None:
        with self.cond:
            self.calls.append((name, text))
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.calls) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.calls)} sink calls, expected {n}"
                self.cond.wait(left)

    def text(self, name: str = "stdout") -> str:
        return "".join(t for n, t in self.calls if n == name)


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.001)


def test_first_line_goes_at_once_and_a_burst_waits_for_flush():
    sink = Sink()
    w = StreamWriter("stdout", 1, sink, delay=60.0)  # the flusher will not fire in this test
    w.write("line 0\n")
    assert sink.calls == [("stdout", "line 0\n")]
    for i in range(1, 100):
        w.write(f"line {i}\n")
    assert len(sink.calls) == 1
    w.flush()
    assert sink.calls[1] == ("stdout", "".join(f"line {i}\n" for i in range(1, 100)))
    w.write("after flush\n")  # flush() ends the burst: the next line goes at once
    assert sink.calls[-1] == ("stdout", "after flush\n")


def test_the_flusher_sends_a_burst_within_its_delay():
    sink = Sink()
    w = StreamWriter("stdout", 1, sink, delay=0.01)
    w.write("a\n")
    w.write("b\n")
    w.write("c\n")
    assert sink.calls == [("stdout", "a\n")]
    sink.wait(2)
    assert sink.calls[1] == ("stdout", "b\nc\n")
    wait_until(lambda: not w._burst)  # a quiet window ends the burst
    w.write("d\n")
    assert sink.calls[-1] == ("stdout", "d\n")


def test_a_burst_past_the_limit_is_sent_without_waiting():
    sink = Sink()
    w = StreamWriter("stdout", 1, sink, limit=100, delay=60.0)
    for i in range(50):
        w.write(f"{i:03}\n")
    expected = "".join(f"{i:03}\n" for i in range(50))
    assert len(sink.calls) >= 2 and expected.startswith(sink.text())
    w.flush()
    assert sink.text() == expected


def test_interleaved_streams_keep_their_own_order():
    sink = Sink()
    out = StreamWriter("stdout", 1, sink, delay=0.002)
    err = StreamWriter("stderr", 2, sink, delay=0.002)
    for i in range(5000):
        (out if i % 3 else err).write(f"{i}\n")
    out.flush()
    err.flush()
    assert sink.text("stdout") == "".join(f"{i}\n" for i in range(5000) if i % 3)
    assert sink.text("stderr") == "".join(f"{i}\n" for i in range(5000) if not i % 3)


def test_writes_from_threads_lose_nothing():
    sink = Sink()
    w = StreamWriter("stdout", 1, sink, delay=0.001)

    def work(k: int) -> None:
        for i in range(2000):
            w.write(f"{k}:{i}\n")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.flush()
    lines = sink.text().splitlines()
    assert len(lines) == 8000
    for k in range(4):
        assert [ln for ln in lines if ln.startswith(f"{k}:")] == [f"{k}:{i}" for i in range(2000)]


def test_flusher_thread_blocks_every_signal():
    sink = Sink()
    w = StreamWriter("stdout", 1, sink, delay=0.001)
    w.write("a\n")
    w.write("b\n")
    sink.wait(2)
    [thread] = [t for t in threading.enumerate() if t.name == "cellbox-output-flusher"]
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        blocked = int(next(ln for ln in f if ln.startswith("SigBlk:")).split()[1], 16)
    for sig in (signal.SIGINT, signal.SIGALRM, signal.SIGTERM):
        assert blocked >> (sig - 1) & 1, sig


def test_cell_output_in_a_burst_is_complete_and_first_line_is_alone(h):
    h.ok("for i in range(10_000):\n    print(i)")
    assert h.text() == "".join(f"{i}\n" for i in range(10_000))
    assert h.chunks()[0] == "0\n"
    assert len(h.chunks()) < 1000


def test_first_line_of_each_cell_goes_at_once(h):
    h.ok("for i in range(100):\n    print(i)")
    n = len(h.chunks())
    h.ok("print('next cell')\nprint('second line')")
    assert h.chunks()[n] == "next cell\n"
