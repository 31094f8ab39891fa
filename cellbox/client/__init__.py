"""The Python client: drive a ``cellbox serve`` process (or any byte streams speaking its
protocol) from anyio code.

::

    async with cellbox.connect() as server:
        session = await server.create_session()
        result = await session.eval("x = 41\\nx + 1")
        print(result.value.repr)                      # 42

        async with session.stream("for i in range(3): print(i)") as events:
            async for event in events:               # output, displays, input requests...
                print(event)                         # ...and last, the EvalResult

Layout: a sans-IO core under an anyio shell, as h11 under an HTTP client.

- ``connection``: ``ClientConnection``, the protocol without I/O: request ids, framing, the
  pending calls, and the routing of what the server sends (a reply to the call waiting on its
  id; a ``session/output``, ``session/display`` or ``session/inputRequest`` notification to
  the eval whose ``requestId`` it carries; anything else to ``on_notification``);
- ``shell``: ``Client`` and ``connect()``: the process, the streams, one reader task that
  feeds the connection and wakes the callers its events name, the deadlines;
- ``session``: ``Session`` and ``EvalStream``, handles that call through a ``Client``.

Invariants:

- every call ends, promptly, with its reply, its JSON-RPC error (a ``CellboxError`` subclass
  with the code) or ``ServerGone``: when the server's output ends (it exited, was killed, or
  the connection was closed) every pending call fails, and so does every later one;
- an eval's events reach its caller in the order the server sent them, its result last;
- a call cancelled by the caller (an anyio cancel scope, ``KeyboardInterrupt`` through a
  portal, leaving ``stream()`` early) sends ``$/cancelRequest`` for it, so the server stops
  the code; its late reply is dropped;
- leaving ``connect()`` closes the server's stdin and waits for it to exit (it closes every
  session first); after ``exit_timeout`` seconds it is killed (its children die with it).
"""

from cellbox.client.connection import Event, ServerGone
from cellbox.client.session import EvalStream, Session
from cellbox.client.session import OnInput as OnInput  # callback types, for annotations
from cellbox.client.session import OnOutput as OnOutput
from cellbox.client.shell import Client, connect
from cellbox.client.shell import OnNotification as OnNotification

__all__ = ["Client", "EvalStream", "Event", "ServerGone", "Session", "connect"]
