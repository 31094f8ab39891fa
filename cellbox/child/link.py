"""The child's end of the private channel, and which cell an addressed ``Interrupt`` stops.

Theory of operation
-------------------
The supervisor stops cell ``id`` by writing ``Interrupt(id)`` and then sending SIGINT. The
signal carries no cell id: it only wakes the child, whose cell may be busy in Python or blocked
in C and never return to the event loop, so the SIGINT handler reads the channel itself. The
channel is therefore read from three places, and the last can run in the middle of the others:

- the loop's reader callback (a cell is awaiting, or none runs);
- ``wait_for`` (``Configure`` at start, ``InputReply`` inside ``input()``);
- the SIGINT handler (``collect(wakeup=True)``).

``collect()`` reads what the socket holds, without blocking, and sorts it: the ids of
``Interrupt`` messages go to ``interrupts``, every other message to ``pending``, in arrival
order. Whoever collected then applies the interrupts (``Cells.route`` says how), so an
interrupt reaches its cell through whichever reader got it first; the host's loop handles
``pending``.

Invariants:

- One ``collect`` at a time feeds the frame reader. One that finds another under way (a signal
  handler that interrupted the main code's) reads nothing and marks the running one ``missed``,
  which reads again before it returns; the handler also leaves the reading to a ``wait_for``
  under way, which is about to read (the socket is readable, so its ``poll`` returns). Bytes are
  never read and left unfed, so no message is lost or reordered.
- Each message is in exactly one place: the socket, ``pending`` or ``interrupts``, or handed
  out. They are taken with ``popleft``, which a signal handler cannot split, so each interrupt is
  applied once.
- ``send`` writes a frame whole, and ``collect`` sorts what it read, inside ``hold()`` and
  ``release()``: an interrupt or timeout raised into user code (which may have called them from
  ``display()`` or ``input()``) waits until they are done.
- ``Cells.route`` acts on ``Interrupt(id)`` only while cell ``id`` runs, or when its ``Exec``
  has been read and the cell has not ended; an interrupt for any other id (late, for a cell that
  ended) is ignored.
- A copy of the child made by ``os.fork()`` in user code never reads the channel and never
  writes to it: its reads find nothing, its messages are dropped, and it exits (status 0) when
  it would send the ``Done`` of the cell that forked it instead of going back to the loop,
  where it would compete with the child for the session's messages.
"""

from __future__ import annotations

import enum
import os
import select
import socket
from collections import deque
from collections.abc import Callable

from cellbox.protocol import channel as ch

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


class Route(enum.Enum):
    """What to do with ``Interrupt(id)``."""

    NOW = "now"  #: cell ``id`` runs: interrupt it
    AT_START = "at start"  #: read, not started: stop it as soon as it starts
    IGNORE = "ignore"  #: ended (or never seen): a late interrupt


class Cells:
    """The cells whose ``Exec`` this child has read and that have not ended. Pure data: the
    host reports ``received``/``ended`` and asks ``route``."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def received(self, cell_id: int) -> None:
        self.open.add(cell_id)

    def ended(self, cell_id: int) -> None:
        self.open.discard(cell_id)

    def route(self, cell_id: int, running: int | None) -> Route:
        """Where ``Interrupt(cell_id)`` goes while ``running`` (None: no cell) runs."""
        if cell_id == running:
            return Route.NOW
        if cell_id in self.open:
            return Route.AT_START
        return Route.IGNORE


def _nothing() -> None:
    pass


class Channel:
    """The child's end of the private channel (a stream socket, blocking for writes).

    ``on_exec(id)`` is called as each ``Exec`` is read (before any message after it is
    sorted); ``on_pending()`` after a ``collect`` that added to ``pending`` or met the end of
    the channel; ``hold``/``release`` bracket the work that must not be cut short. All may be
    set after construction and are called on the main thread, possibly from a signal handler.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reader = ch.ChannelReader(to_child=True)
        self.pending: deque[object] = deque()
        self.interrupts: deque[int] = deque()
        self.eof = False
        self.on_exec: Callable[[int], None] = lambda cell_id: None
        self.on_pending: Callable[[], None] = _nothing
        self.hold: Callable[[], None] = _nothing
        self.release: Callable[[], None] = _nothing
        self._sock = socket.socket(fileno=fd)
        self._pid = os.getpid()  # a process with another pid is a fork of the child
        self._busy = False  # a collect is reading or sorting
        self._missed = False  # a collect was refused meanwhile
        self._waiting = False  # a wait_for is under way

    def send(self, msg: ch.Msg) -> None:
        if os.getpid() != self._pid:
            if isinstance(msg, ch.Done):
                os._exit(0)  # a fork of the child that finished its cell: it ends here
            return
        data = memoryview(ch.encode(msg))
        self.hold()
        try:
            while data:
                try:
                    n = os.write(self.fd, data)
                except InterruptedError:
                    continue
                except OSError as exc:
                    channel_lost(exc)
                data = data[n:]
        finally:
            self.release()

    def collect(self, *, wakeup: bool = False) -> bool:
        """Read and sort what the channel holds now, without blocking. ``wakeup``: called
        from the SIGINT handler, which leaves the reading to a ``wait_for`` under way. Returns
        False if it read nothing because another reader is under way (that one reads what
        this one would have; see the module docstring)."""
        if self._busy or (wakeup and self._waiting):
            self._missed = True
            return False
        self.hold()
        try:
            added = False
            while True:
                self._busy = True
                self._missed = False
                try:
                    added |= self._read()
                finally:
                    self._busy = False
                if not self._missed:
                    break
            if added:
                self.on_pending()
        finally:
            self.release()
        return True

    def _read(self) -> bool:
        added = False
        if os.getpid() != self._pid:
            return False  # a fork of the child: the session's messages are not its own
        while not self.eof:
            try:
                data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                channel_lost(exc)
            if not data:
                self.eof = True
                return True
            for msg in self.reader.feed(data):
                if isinstance(msg, ch.Interrupt):
                    self.interrupts.append(msg.id)
                else:
                    if isinstance(msg, ch.Exec):
                        self.on_exec(msg.id)
                    self.pending.append(msg)
                    added = True
        return added

    def take(self, kind: type) -> object | None:
        """Remove and return the first pending message of ``kind`` (None if there is none)."""
        for msg in self.pending:
            if isinstance(msg, kind):
                self.pending.remove(msg)
                return msg
        return None

    def wait_for(self, kind: type, between: Callable[[], None] = _nothing) -> object | None:
        """Block until a message of ``kind`` arrives and return it (None at end of channel);
        the others stay in ``pending``. ``between()`` runs after each read (to apply the
        interrupts it brought; it may raise, which ends the wait)."""
        if os.getpid() != self._pid:
            return None  # a fork of the child has no channel of its own
        self._waiting = True
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        try:
            between()
            while True:
                msg = self.take(kind)
                if msg is not None:
                    return msg
                if self.eof:
                    return None
                poller.poll()  # retried after a signal handler that returns (PEP 475)
                self.collect()
                between()
        finally:
            self._waiting = False
