"""A real ``cellbox serve`` process driven over real pipes, for process-level tests.

Each server gets a unique tag in its environment; every child and descendant inherits it, so
``leftovers()`` finds any process of this server that survived (by scanning /proc), however it
was started (fork, setsid, double fork).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')} {error.get('data', '')}")
        self.code = error.get("code")
        self.error = error


class Server:
    def __init__(self, *args: str, env: dict[str, str] | None = None, framing: str = "ndjson") -> None:
        self.args = args
        self.tag = uuid.uuid4().hex
        full_env = dict(os.environ)
        full_env["CELLBOX_TEST_TAG"] = self.tag
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cellbox", "serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=ROOT,
        )
        self._ids = itertools.count(1_000_000)  # clear of the small ids raw test messages use
        self._lock = threading.Condition()
        self.replies: dict[Any, dict[str, Any]] = {}
        self.arrived: dict[Any, float] = {}  # when each reply was read (time.monotonic)
        self.notifications: list[dict[str, Any]] = []
        self.raw: list[Any] = []
        self.stderr_lines: list[bytes] = []
        self.reading = threading.Event()  # cleared: stdout is left unread (a stalled client)
        self.reading.set()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- io --------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while True:
            self.reading.wait()
            line = self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            with self._lock:
                self.raw.append(msg)
                if isinstance(msg, dict) and "id" in msg and ("result" in msg or "error" in msg):
                    self.replies[_k(msg["id"])] = msg
                    self.arrived[_k(msg["id"])] = time.monotonic()
                elif isinstance(msg, dict):
                    self.notifications.append(msg)
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, method: str, params: Any = None, *, id: Any = "auto") -> Any:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if id == "auto":
            id = next(self._ids)
        if id is not None:
            msg["id"] = id
        if params is not None:
            msg["params"] = params
        self.write(json.dumps(msg) + "\n")
        return id

    def notify(self, method: str, params: Any = None) -> None:
        self.send(method, params, id=None)

    def wait_for(self, predicate, timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` returns a truthy value (called under the lock)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; stderr: {self.stderr_text()[-2000:]}")
                self._lock.wait(left)

    def wait_output(self, request_id: Any, marker: str, timeout: float = 20.0, stream: str = "stdout") -> str:
        """Wait until the eval ``request_id`` has streamed ``marker`` (in ``session/output``
        notifications); return its output so far."""

        def seen() -> str:
            text = self.outputs(request_id, stream)
            return text if marker in text else ""

        return self.wait_for(seen, timeout)

    def start(self, session: str, code: str, ready: str = "ready", wait: float = 20.0, *,
              asleep: bool = False, **params: Any) -> Any:
        """Send an eval whose ``code`` prints ``ready`` and flushes right before it blocks
        (``print('ready', flush=True); time.sleep(60)``); return its request id once that
        output has arrived, so the child is inside the blocking call, not merely holding the
        eval. With ``asleep``, also wait until the child's main thread sleeps in the kernel
        (the output can reach us before ``print`` returns). ``params`` go on the wire
        (``timeout=`` included); ``wait`` bounds the wait."""
        assert ready in code, f"the cell must print {ready!r} right before it blocks"
        rid = self.send("session/eval", {"session": session, "code": code, **params})
        self.wait_output(rid, ready, wait)
        if asleep:
            (pid,) = [s["pid"] for s in self.call("session/list")["sessions"] if s["session"] == session]
            assert poll_until(lambda: _thread_state(pid) == "S", wait), f"child {pid} never slept"
        return rid

    def reply(self, id: Any, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_for(lambda: self.replies.get(_k(id)), timeout)

    def call(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        msg = self.reply(self.send(method, params), timeout)
        if "error" in msg:
            raise RpcError(msg["error"])
        return msg["result"]

    def rss_kib(self) -> int:
        """The server process's resident set, in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def adopter(self, session: str) -> int:
        """The pid of the process that adopted ``session``'s child, seen from here: the
        server, through the child's init when the child is contained in a PID namespace."""
        (pid,) = [s["pid"] for s in self.call("session/list")["sessions"] if s["session"] == session]
        parent = _ppid(pid)
        return _ppid(parent) if _comm(str(parent)) == "cellbox-init" else parent

    def stderr_text(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    # -- conveniences ----------------------------------------------------------------------

    def create(self, **params: Any) -> str:
        return self.call("session/create", params, timeout=30)["session"]

    def eval(self, session: str, code: str, wait: float = 20.0, **params: Any) -> dict[str, Any]:
        """``session/eval`` and its result; ``params`` go on the wire (``timeout=`` included)."""
        return self.call("session/eval", {"session": session, "code": code, **params}, timeout=wait)

    def outputs(self, request_id: Any, stream: str = "stdout") -> str:
        with self._lock:
            return "".join(
                n["params"]["text"]
                for n in self.notifications
                if n.get("method") == "session/output"
                and n["params"].get("requestId") == request_id
                and n["params"]["stream"] == stream
            )

    # -- shutdown and leaks ----------------------------------------------------------------

    def close(self, timeout: float = 15.0) -> int:
        self.reading.set()  # a stalled client reads again, so the server can finish
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def leftovers(self) -> list[int]:
        """Live processes of this server, the server itself excluded, and while it runs also
        its own helpers (sentinel, zygote, warm children)."""
        running = self.proc.poll() is None
        return leftovers(
            self.tag, ignore=lambda pid: pid == self.proc.pid or (running and _comm(str(pid)) in _HELPERS)
        )

    def assert_no_leftovers(self, timeout: float = 5.0) -> None:
        assert_no_leftovers(self.tag, timeout, source=self.leftovers)


def leftovers(tag: str, *, ignore: Callable[[int], bool] = lambda pid: False) -> list[int]:
    """Live (not zombie) processes whose environment carries ``CELLBOX_TEST_TAG=tag``."""
    marker = f"CELLBOX_TEST_TAG={tag}".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or ignore(int(name)):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(int(name))
    return out


def assert_no_leftovers(
    tag: str,
    timeout: float = 5.0,
    *,
    ignore: Callable[[int], bool] = lambda pid: False,
    source: Callable[[], list[int]] | None = None,
) -> None:
    """Fail if processes carrying ``tag`` are still alive after ``timeout`` seconds."""
    find = source or (lambda: leftovers(tag, ignore=ignore))
    left: list[int] = []

    def none_left() -> bool:
        left[:] = find()
        return not left

    if not poll_until(none_left, timeout):
        raise AssertionError(f"processes survived: {left}")


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Call ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds
    pass (returns the last falsy value). For state with no event to wait on (/proc, a request
    answered by polling); between tries the thread waits, it never spins."""
    pause = threading.Event()  # never set: wait() is an interruptible, yielding pause
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        pause.wait(min(interval, max(0.0, deadline - time.monotonic())))


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``pid`` has exited (a zombie counts as exited); fail after ``timeout`` s.

    Waits on a pidfd, which becomes readable when the process exits, so nothing polls.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd support (old kernel): poll /proc instead
        if not poll_until(lambda: not _alive(pid), timeout):
            raise AssertionError(f"pid {pid} still alive after {timeout} s") from None
        return
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not readable:
        raise AssertionError(f"pid {pid} still alive after {timeout} s")


def _alive(pid: int) -> bool:
    """True iff ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_HELPERS = {"cellbox-sentry", "cellbox-zygote", "cellbox-warm", "cellbox-init"}


def _thread_state(pid: int) -> str:
    """The scheduler state of ``pid``'s main thread (``R``, ``S``, ...)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _k(id: Any) -> Any:
    return (type(id).__name__, id)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
