"""The child's end of the channel (``cellbox.child.link``), in-process over a socketpair.

The SIGINT handler's reads are simulated by calling ``collect(wakeup=True)`` from the hooks the
channel calls in the middle of its own work, which is where a real handler can land.
"""

from __future__ import annotations

import os
import socket

import pytest

from cellbox.child.link import Cells, Channel, Route
from cellbox.protocol import channel as ch


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    chan = Channel(os.dup(theirs.fileno()))
    theirs.close()
    yield chan, ours
    ours.close()
    chan._sock.close()


def exec_(i: int) -> ch.Exec:
    return ch.Exec(id=i, code=f"c{i}", execution_count=i)


def write(sock: socket.socket, *msgs: ch.Msg) -> None:
    sock.sendall(b"".join(ch.encode(m) for m in msgs))


# --- routing an addressed interrupt (pure) --------------------------------------------------

ROUTES = [
    # (received, ended, interrupt id, running id, route)
    ([1], [], 1, 1, Route.NOW),
    ([1, 2], [], 2, 1, Route.AT_START),  # read, queued behind the running cell
    ([1], [], 1, None, Route.AT_START),  # read, not started yet
    ([1], [1], 1, None, Route.IGNORE),  # ended: a late interrupt
    ([1, 2], [1], 1, 2, Route.IGNORE),  # late, while the next cell runs
    ([], [], 5, None, Route.IGNORE),  # never seen
    ([1], [], 5, 1, Route.IGNORE),
]


@pytest.mark.parametrize("received, ended, cell_id, running, route", ROUTES)
def test_route(received, ended, cell_id, running, route):
    cells = Cells()
    for i in received:
        cells.received(i)
    for i in ended:
        cells.ended(i)
    assert cells.route(cell_id, running) is route


# --- collect ---------------------------------------------------------------------------------

def test_collect_sorts_interrupts_and_keeps_the_rest_in_order(pair):
    chan, sup = pair
    seen = []
    chan.on_exec = seen.append
    write(sup, exec_(1), ch.Interrupt(id=1), ch.Complete(id=9, code="x", cursor=1), exec_(2),
          ch.Interrupt(id=2))
    assert chan.collect()
    assert list(chan.interrupts) == [1, 2]
    assert [type(m).__name__ for m in chan.pending] == ["Exec", "Complete", "Exec"]
    assert seen == [1, 2]


def test_collect_reads_nothing_when_nothing_is_there(pair):
    chan, sup = pair
    calls = []
    chan.on_pending = lambda: calls.append(1)
    assert chan.collect()
    assert not chan.pending and not chan.interrupts and not chan.eof and not calls


def test_a_frame_split_across_reads(pair):
    chan, sup = pair
    frame = ch.encode(exec_(1))
    sup.sendall(frame[:5])
    chan.collect()
    assert not chan.pending
    sup.sendall(frame[5:])
    chan.collect()
    assert list(chan.pending) == [exec_(1)]


def test_end_of_channel(pair):
    chan, sup = pair
    calls = []
    chan.on_pending = lambda: calls.append(1)
    write(sup, exec_(1))
    sup.close()
    chan.collect()
    assert chan.eof and list(chan.pending) == [exec_(1)] and calls == [1]


def test_a_wakeup_inside_a_collect_is_left_to_it_and_nothing_is_lost(pair):
    # The handler lands while the main code's collect is sorting: it must not feed the reader
    # (that would reorder or corrupt frames); the running collect reads what it missed.
    chan, sup = pair
    nested = []

    def on_exec(i: int) -> None:
        if i == 1:
            write(sup, exec_(2), ch.Interrupt(id=2))  # arrives "after" the signal
            nested.append(chan.collect(wakeup=True))

    chan.on_exec = on_exec
    write(sup, exec_(1))
    assert chan.collect()
    assert nested == [False]
    assert list(chan.pending) == [exec_(1), exec_(2)]
    assert list(chan.interrupts) == [2]


def test_hold_and_release_bracket_send_and_collect(pair):
    chan, sup = pair
    log = []
    chan.hold = lambda: log.append("hold")
    chan.release = lambda: log.append("release")
    chan.send(ch.Hello(pid=1, python="3"))
    write(sup, exec_(1))
    chan.collect()
    assert log == ["hold", "release", "hold", "release"]
    reader = ch.ChannelReader(to_child=False)
    assert reader.feed(sup.recv(100)) == [ch.Hello(pid=1, python="3")]


def test_release_may_raise_after_the_messages_are_sorted(pair):
    chan, sup = pair

    def release():
        raise KeyboardInterrupt

    chan.release = release
    write(sup, exec_(1), ch.Interrupt(id=1))
    with pytest.raises(KeyboardInterrupt):
        chan.collect()
    assert list(chan.pending) == [exec_(1)] and list(chan.interrupts) == [1]


# --- wait_for --------------------------------------------------------------------------------

def test_wait_for_returns_its_kind_and_keeps_the_others(pair):
    chan, sup = pair
    applied = []
    chan.interrupts.clear()

    def between():
        applied.extend(chan.interrupts)
        chan.interrupts.clear()

    write(sup, exec_(1), ch.Interrupt(id=1), ch.InputReply(text="hi"), exec_(2))
    assert chan.wait_for(ch.InputReply, between) == ch.InputReply(text="hi")
    assert applied == [1]
    assert list(chan.pending) == [exec_(1), exec_(2)]


def test_wait_for_leaves_reading_to_itself_during_a_wakeup(pair):
    # A SIGINT while wait_for blocks: the handler must not read (wait_for's poll is about to
    # return and read); it would otherwise take the reply from under it.
    chan, sup = pair
    results = []

    def between():
        if not results:
            write(sup, ch.InputReply(text="hi"))
            results.append(chan.collect(wakeup=True))

    assert chan.wait_for(ch.InputReply, between) == ch.InputReply(text="hi")
    assert results == [False]
    assert chan.collect(wakeup=True)  # after the wait, the handler reads again


def test_wait_for_end_of_channel(pair):
    chan, sup = pair
    write(sup, exec_(1))
    sup.shutdown(socket.SHUT_WR)
    assert chan.wait_for(ch.InputReply) is None
    assert list(chan.pending) == [exec_(1)]


def test_between_may_raise_to_end_the_wait(pair):
    chan, sup = pair

    def between():
        if chan.interrupts:
            raise KeyboardInterrupt

    write(sup, ch.Interrupt(id=1))
    with pytest.raises(KeyboardInterrupt):
        chan.wait_for(ch.InputReply, between)
    assert chan.collect(wakeup=True)  # no longer waiting
