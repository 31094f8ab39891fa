"""The raw pipe floor: what a message round trip costs with no protocol, no framing work and no
event loop, measured on this machine in the same run as cellbox.

- one hop: client -> echo process -> client, over two pipes (``os.write``/``os.read``);
- two hops: client -> relay process -> echo process -> relay -> client, the shape of
  client -> supervisor -> child (cellbox has two hops, Jupyter's kernel one).

The echo and relay are tiny Python loops of blocking ``os.read``/``os.write``; the message is
the size of a typical ``session/eval`` request. A cellbox round trip is compared with the
two-hop floor (``ratio`` rows and the CI gate), which tracks the machine's current load.
Also here: the raw pipe bandwidth floor for output, and the interpreter start floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

MESSAGE = (b'{"jsonrpc":"2.0","id":1234,"method":"session/eval","params":'
           b'{"session":"0f3a9c2b7d1e","code":"1+1"}}\n')

_ECHO = """
import os
r, w = os.read, os.write
while True:
    d = r(0, 65536)
    if not d:
        break
    w(1, d)
"""

_RELAY = """
import os, subprocess, sys
p = subprocess.Popen([sys.executable, "-c", %r], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     bufsize=0)
to, frm = p.stdin.fileno(), p.stdout.fileno()
r, w = os.read, os.write
while True:
    d = r(0, 65536)
    if not d:
        break
    w(to, d)
    w(1, r(frm, 65536))
p.stdin.close()
p.wait()
""" % _ECHO


class PipeFloor:
    """A ping-pong partner ``hops`` processes away (1 or 2). ``ping()`` returns one round
    trip in seconds. Messages stay under PIPE_BUF, so each read gets the whole reply."""

    def __init__(self, hops: int) -> None:
        if hops not in (1, 2):
            raise ValueError("hops must be 1 or 2")
        self.hops = hops
        self.proc = subprocess.Popen([sys.executable, "-c", _ECHO if hops == 1 else _RELAY],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._w = self.proc.stdin.fileno()  # type: ignore[union-attr]
        self._r = self.proc.stdout.fileno()  # type: ignore[union-attr]
        for _ in range(50):
            self.ping()

    def ping(self) -> float:
        t0 = time.perf_counter()
        os.write(self._w, MESSAGE)
        got = os.read(self._r, 65536)
        dt = time.perf_counter() - t0
        assert got == MESSAGE, got
        return dt

    def samples(self, n: int) -> list[float]:
        return [self.ping() for _ in range(n)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]

    def __enter__(self) -> PipeFloor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pipe_bandwidth(total: int = 10_000_000, chunk: int = 1000) -> float:
    """Seconds for a child that writes ``total`` bytes in ``chunk``-byte writes to get them
    through a pipe to this process (the output floor: no framing, no JSON)."""
    code = ("import os\nb = b'x' * %d\nw = os.write\nfor _ in range(%d): w(1, b)\n"
            % (chunk, total // chunk))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, bufsize=0)
    fd = p.stdout.fileno()  # type: ignore[union-attr]
    got = 0
    first = None
    while True:
        d = os.read(fd, 1 << 16)
        if not d:
            break
        if first is None:
            first = time.perf_counter()
        got += len(d)
    p.wait()
    p.stdout.close()  # type: ignore[union-attr]
    assert got == total, got
    assert first is not None
    # time from the first byte: the interpreter's start is not output bandwidth
    return time.perf_counter() - first


def interpreter_start(code: str = "import asyncio, msgspec") -> float:
    """Seconds to start ``python -c code`` and see it exit: the floor under a cold session,
    whose child is a fresh interpreter that imports about this much."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0
