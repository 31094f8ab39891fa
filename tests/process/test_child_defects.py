"""The child interpreter driven directly over its channel, without a supervisor.

Each test spawns ``cellbox.child.main`` the way the supervisor does (``posix_spawn``, fd 0 on
/dev/null, fds 1 and 2 on pipes, a socketpair on fd 3), then plays the supervisor's part:
``Configure``, ``Exec``, addressed ``Interrupt`` messages and SIGINT wake-ups, and reads what
comes back. Waits are on the channel or the output pipes, each under a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest

from cellbox.protocol import channel as ch
from tests.harness import ROOT

BOOT = "from cellbox.child.main import main\nmain()\n"


class Child:
    """One child process and the supervisor's end of its channel."""

    def __init__(self, *, sigmask: tuple[int, ...] = (), prelude: str = "") -> None:
        sup, theirs = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("CELLBOX_PARENT", None)
        argv = [sys.executable, "-c", BOOT]
        if prelude:  # runs first, then execs the child with the state it left (mask, SIG_IGN)
            argv = [sys.executable, "-c", f"import os, signal, sys\n{prelude}\n"
                    f"os.execv(sys.executable, {argv!r})"]
        try:
            self.pid = os.posix_spawn(
                sys.executable, argv, env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out_w, 1),
                              (os.POSIX_SPAWN_DUP2, err_w, 2),
                              (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)],
                setpgroup=0, setsigmask=sigmask)
        finally:
            for fd in (out_w, err_w):
                os.close(fd)
            theirs.close()
        self.sock = sup
        self.reader = ch.ChannelReader(to_child=False)
        self.inbox: list[Any] = []
        self.output = {"stdout": bytearray(), "stderr": bytearray()}
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(fd, name), daemon=True)
                         for fd, name in ((out_r, "stdout"), (err_r, "stderr"))]
        for t in self._threads:
            t.start()
        self.status: int | None = None

    def _pump(self, fd: int, name: str) -> None:
        with os.fdopen(fd, "rb", buffering=0) as f:
            while data := f.read(65536):
                with self._cond:
                    self.output[name] += data
                    self._cond.notify_all()

    # -- channel ----------------------------------------------------------------------------

    def send(self, *msgs: ch.Msg) -> None:
        self.sock.sendall(b"".join(ch.encode(m) for m in msgs))

    def recv(self, kind: type, timeout: float = 10.0) -> Any:
        """The first message of ``kind`` (earlier ones of other kinds are kept in ``inbox``)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.inbox):
                if isinstance(msg, kind):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind.__name__} within {timeout} s; "
                                   f"stderr: {self.text('stderr')[-2000:]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                raise EOFError(f"channel closed; stderr: {self.text('stderr')[-2000:]}")
            self.inbox.extend(self.reader.feed(data))

    def start(self, **configure: Any) -> ch.Hello:
        self.send(ch.Configure(session="t", **configure))
        hello = self.recv(ch.Hello, timeout=30)
        assert hello.error is None, hello.error
        return hello

    def run(self, cell_id: int, code: str, timeout: float = 10.0, **kw: Any) -> ch.Done:
        self.send(ch.Exec(id=cell_id, code=code, execution_count=cell_id, **kw))
        return self.recv(ch.Done, timeout)

    def interrupt(self, cell_id: int) -> None:
        """What the supervisor does: the addressed message first, then the wake-up."""
        self.send(ch.Interrupt(id=cell_id))
        os.kill(self.pid, signal.SIGINT)

    def interrupt_until_done(self, cell_id: int, every: float = 0.05, timeout: float = 5.0) -> ch.Done:
        """The addressed message once, then a wake-up SIGINT every ``every`` seconds until the
        cell's ``Done`` comes. A SIGINT that lands just before the main thread enters a
        blocking call (after its C handler ran, before ``clock_nanosleep``) does not wake it:
        a CPython race no handler can close. Repeating the wake-up is harmless (each
        ``Interrupt`` is applied once; a bare SIGINT does nothing) and closes it."""
        self.send(ch.Interrupt(id=cell_id))
        deadline = time.monotonic() + timeout
        while True:
            os.kill(self.pid, signal.SIGINT)
            try:
                return self.recv(ch.Done, timeout=every)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    # -- output and process -----------------------------------------------------------------

    def text(self, stream: str = "stdout") -> str:
        with self._cond:
            return self.output[stream].decode(errors="replace")

    def wait_output(self, needle: str, stream: str = "stdout", timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while needle.encode() not in self.output[stream]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{needle!r} not on {stream} within {timeout} s")
                self._cond.wait(left)

    def wait_size(self, stream: str, size: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.output[stream]) < size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.output[stream])} bytes on {stream}, not {size}")
                self._cond.wait(left)

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def proc_status(self, field: str) -> str:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split(":", 1)[1].strip()
        raise KeyError(field)

    def close(self) -> None:
        self.sock.close()  # end of channel: the child exits 0
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def child():
    made: list[Child] = []

    def make(**kw: Any) -> Child:
        c = Child(**kw)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.close()


# --- addressed interrupts ---------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_interrupt_right_after_exec_always_stops_that_cell(child):
    c = child()
    for i in range(1, 301):
        c.send(ch.Exec(id=i, code="while True: pass", execution_count=i))
        c.interrupt(i)
        done = c.recv(ch.Done)
        assert (done.id, done.stopped) == (i, "interrupt"), (i, done)
        assert done.error is not None and done.error.type in ("KeyboardInterrupt", "CancelledError")
    assert c.alive()
    assert c.run(1000, "2 + 2").value.repr == "4"


def test_interrupt_for_an_ended_cell_does_not_stop_the_next(child):
    c = child()
    for i in range(1, 41, 2):
        assert c.run(i, "1").error is None
        c.interrupt(i)  # late: cell i has ended
        done = c.run(i + 1, "import time\ntime.sleep(0.01)\n'ran'")
        assert (done.error, done.stopped, done.value.repr) == (None, None, "'ran'")
    assert c.alive()


def test_interrupt_for_an_ended_cell_during_a_running_one_is_ignored(child):
    c = child()
    c.run(1, "1")
    c.send(ch.Exec(id=2, code="import time\nprint('go', flush=True)\ntime.sleep(0.3)\n'ok'",
                   execution_count=2))
    c.wait_output("go")
    c.interrupt(1)
    done = c.recv(ch.Done)
    assert (done.id, done.stopped, done.value.repr) == (2, None, "'ok'")


def test_bare_sigint_changes_nothing(child):
    c = child()
    c.send(ch.Exec(id=1, code="import time\nprint('go', flush=True)\nfor _ in range(30):\n"
                              "    time.sleep(0.01)\n'ok'", execution_count=1))
    c.wait_output("go")
    for _ in range(5):
        os.kill(c.pid, signal.SIGINT)
    done = c.recv(ch.Done)
    assert (done.stopped, done.error, done.value.repr) == (None, None, "'ok'")
    os.kill(c.pid, signal.SIGINT)  # while idle
    assert c.run(2, "2 + 2").value.repr == "4"
    assert c.alive()


def test_interrupt_message_alone_stops_an_awaiting_cell(child):
    c = child()
    c.send(ch.Exec(id=1, code="import asyncio\nprint('go', flush=True)\nawait asyncio.sleep(30)",
                   execution_count=1))
    c.wait_output("go")
    c.send(ch.Interrupt(id=1))  # no SIGINT: the loop's reader gets it
    done = c.recv(ch.Done)
    assert done.stopped == "interrupt" and done.error.type == "CancelledError"


def test_interrupt_of_a_queued_cell_stops_it_when_it_starts(child):
    c = child()
    c.send(ch.Exec(id=1, code="import time\nprint('go', flush=True)\ntime.sleep(0.2)\n1",
                   execution_count=1),
           ch.Exec(id=2, code="ran = True", execution_count=2))
    c.wait_output("go")
    c.interrupt(2)
    first, second = c.recv(ch.Done), c.recv(ch.Done)
    assert (first.id, first.stopped, first.value.repr) == (1, None, "1")
    assert (second.id, second.stopped) == (2, "interrupt")
    assert c.run(3, "'ran' in globals()").value.repr == "False"


def test_interrupt_inside_input(child):
    c = child()
    c.send(ch.Exec(id=1, code="input('? ')", execution_count=1, allow_stdin=True))
    c.recv(ch.InputRequest)
    done = c.interrupt_until_done(1)
    assert done.stopped == "interrupt" and done.error.type == "KeyboardInterrupt"
    c.send(ch.Exec(id=2, code="input('? ')", execution_count=2, allow_stdin=True))
    c.recv(ch.InputRequest)
    c.send(ch.InputReply(text="yes"))
    assert c.recv(ch.Done).value.repr == "'yes'"


def test_interrupts_while_the_cell_writes_to_the_channel_keep_it_whole(child):
    c = child()
    for i in range(1, 21):
        c.send(ch.Exec(id=i, code="while True:\n    display({'x': 'y' * 5000})", execution_count=i))
        c.recv(ch.DisplayEvent)
        c.interrupt(i)
        done = c.recv(ch.Done)
        assert (done.id, done.stopped) == (i, "interrupt")
        c.inbox.clear()
    assert c.run(100, "2 + 2").value.repr == "4"


# --- the signal state a child starts from ----------------------------------------------------

def _mask(hex_mask: str) -> set[int]:
    bits = int(hex_mask, 16)
    return {sig for sig in range(1, 65) if bits >> (sig - 1) & 1}


def test_child_spawned_with_sigint_blocked_unblocks_it(child):
    c = child(sigmask=(signal.SIGINT, signal.SIGTERM))
    assert _mask(c.proc_status("SigBlk")) == set()
    c.send(ch.Exec(id=1, code="while True: pass", execution_count=1))
    c.interrupt(1)
    assert c.recv(ch.Done).stopped == "interrupt"
    assert c.alive()


def test_child_execed_with_sigint_ignored_and_blocked_still_interrupts(child):
    c = child(prelude="signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                      "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
                      "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGQUIT})")
    assert _mask(c.proc_status("SigBlk")) == set()
    assert not _mask(c.proc_status("SigIgn")) & {signal.SIGINT, signal.SIGHUP}
    c.send(ch.Exec(id=1, code="import time\ntime.sleep(30)", execution_count=1))
    done = c.interrupt_until_done(1)
    assert done.stopped == "interrupt" and done.error.type == "KeyboardInterrupt"


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "spawn"])
def test_server_started_with_sigint_blocked_gives_children_an_empty_mask(make_server, zygote):
    # A server started from a thread that blocks SIGINT: its zygote and children inherit the
    # mask through fork and exec unless they reset it.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        server = make_server(*([] if zygote else ["--no-zygote"]))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    sid = server.create()
    r = server.eval(sid, "import signal\n"
                         "s = {k: v for k, v in (l.split(':\\t') for l in open('/proc/self/status')) "
                         "if k in ('SigBlk', 'SigIgn')}\n"
                         "(int(s['SigBlk'], 16), int(s['SigIgn'], 16) >> (signal.SIGINT - 1) & 1, "
                         "signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN)")
    assert r["value"]["repr"] == "(0, 0, True)", r


# --- coalesced output ------------------------------------------------------------------------

def test_a_burst_before_a_long_call_arrives_during_the_call(child):
    c = child()
    c.send(ch.Exec(id=1, code="for i in range(1000):\n    print(i)\nprint('last')\n"
                              "import time\ntime.sleep(3)", execution_count=1))
    c.wait_output("last\n", timeout=2.0)
    c.sock.settimeout(0)
    with pytest.raises(BlockingIOError):  # the cell is still sleeping: no Done yet
        c.sock.recv(1)
    assert c.text() == "".join(f"{i}\n" for i in range(1000)) + "last\n"
    assert c.recv(ch.Done).error is None


def test_each_stream_keeps_its_order(child):
    c = child()
    done = c.run(1, "import sys\nfor i in range(20000):\n"
                    "    print(i, file=sys.stderr if i % 3 == 0 else sys.stdout)")
    assert done.error is None
    want_out = "".join(f"{i}\n" for i in range(20000) if i % 3)
    want_err = "".join(f"{i}\n" for i in range(20000) if not i % 3)
    c.wait_size("stdout", len(want_out))
    c.wait_size("stderr", len(want_err))
    assert (c.text(), c.text("stderr")) == (want_out, want_err)


def test_a_fork_does_not_repeat_buffered_output(child):
    c = child()
    done = c.run(1, "import os, sys\nfor i in range(200):\n    print(i)\npid = os.fork()\n"
                    "if pid == 0:\n    print('child')\n    sys.stdout.flush()\n    os._exit(0)\n"
                    "os.waitpid(pid, 0)\nprint('parent')")
    assert done.error is None
    c.wait_output("parent\n")
    c.wait_output("child\n")
    text = c.text()
    assert sorted(text.splitlines()) == sorted([str(i) for i in range(200)] + ["child", "parent"])


def test_sleep_after_a_burst_is_interrupted(child):
    # The burst starts the output flusher thread; the SIGINT must still wake the main thread.
    # The burst's last line is sent by the flusher just as the main thread goes to sleep,
    # which is when a single SIGINT can be lost (see interrupt_until_done).
    c = child()
    for i in range(1, 6):
        c.send(ch.Exec(id=i, code=f"for i in range(2000):\n    print(i)\nprint('sleep {i}')\n"
                                  "import time\ntime.sleep(30)", execution_count=i))
        c.wait_output(f"sleep {i}\n")
        done = c.interrupt_until_done(i)
        assert (done.id, done.stopped, done.error.type) == (i, "interrupt", "KeyboardInterrupt")
    assert c.run(10, "2 + 2").value.repr == "4"  # the extra wake-ups stopped nothing else
