"""A minimal, fast NDJSON JSON-RPC driver for ``python -m cellbox serve``, for benchmarks.

It does not use ``cellbox.client``: one process, blocking reads on the calling thread (no
reader thread, no event loop), ``os.write`` of whole lines, ``msgspec.json`` for the codec. So
what a round trip measures is the server and the child, plus the least a client can cost.

Replies that arrive for another request while one is awaited are kept (``_stash``);
notifications go to the ``on_note`` callback of the wait that sees them, or are dropped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from bench.core import ROOT

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

Note = Callable[[dict], None]


class RpcError(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')} {error.get('data') or ''}")
        self.error = error


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


_HELP: str | None = None


def serve_help() -> str:
    """``cellbox serve --help`` (cached): tells which optional flags this build has."""
    global _HELP
    if _HELP is None:
        _HELP = subprocess.run([sys.executable, "-m", "cellbox", "serve", "--help"], cwd=ROOT,
                               env=_env(), capture_output=True, text=True).stdout
    return _HELP


def zygote_flags(want: bool) -> list[str]:
    """Server flags that turn the zygote on (``want``) or off, if this build has such flags;
    otherwise ``[]`` (the server's default applies)."""
    text = serve_help()
    if want and "--zygote" in text.replace("--no-zygote", ""):
        return ["--zygote"]
    if not want and "--no-zygote" in text:
        return ["--no-zygote"]
    return []


def has_zygote(initialize_result: dict | None, stats: dict | None = None) -> bool:
    """True iff the server says it forks sessions from a zygote: ``capabilities.cellbox.zygote``
    in ``initialize`` (true, or an object not saying ``enabled: false``), or a truthy
    ``zygote`` entry in ``server/stats``."""

    def truthy(value: Any) -> bool:
        if isinstance(value, dict):
            return bool(value.get("enabled", value.get("ready", True)))
        return bool(value)

    caps = ((initialize_result or {}).get("capabilities") or {}).get("cellbox") or {}
    return truthy(caps.get("zygote")) or truthy((stats or {}).get("zygote"))


class CellboxServer:
    """``python -m cellbox serve *args`` on pipes. Use as a context manager; ``close()`` sends
    EOF and waits (the server closes every session), killing it after ``timeout``."""

    def __init__(self, *args: str, stderr: Any = subprocess.DEVNULL) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cellbox", "serve", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=_env(),
        )
        self._w = self.proc.stdin.fileno()  # type: ignore[union-attr]
        self._readline = self.proc.stdout.readline  # type: ignore[union-attr]
        self._next_id = 0
        self._stash: dict[Any, dict] = {}
        self.capabilities: dict = {}

    # -- raw ---------------------------------------------------------------------------------

    def send(self, method: str, params: Any = None) -> int:
        """Send a request; return its id (answer with ``wait``)."""
        self._next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self._write(_encode(msg) + b"\n")
        return self._next_id

    def notify(self, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self._write(_encode(msg) + b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._w, view):]

    def read(self) -> dict:
        line = self._readline()
        if not line:
            raise EOFError(f"cellbox serve closed its stdout (exit {self.proc.poll()})")
        return _decode(line)

    def wait(self, rid: int, on_note: Note | None = None) -> dict:
        """Read until the reply to ``rid`` arrives; return the whole reply message."""
        return self.wait_any({rid}, on_note)

    def wait_any(self, rids: set[int], on_note: Note | None = None) -> dict:
        """Read until a reply to one of ``rids`` arrives (stashed ones first)."""
        for rid in rids:
            if rid in self._stash:
                return self._stash.pop(rid)
        while True:
            msg = self.read()
            mid = msg.get("id")
            if mid is None and "method" in msg:
                if on_note is not None:
                    on_note(msg)
            elif mid in rids:
                return msg
            else:
                self._stash[mid] = msg

    def call(self, method: str, params: Any = None, on_note: Note | None = None) -> Any:
        reply = self.wait(self.send(method, params), on_note)
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply["result"]

    # -- methods -----------------------------------------------------------------------------

    def initialize(self) -> dict:
        result = self.call("initialize", {"clientInfo": {"name": "cellbox-bench"}})
        self.capabilities = result.get("capabilities") or {}
        self.initialize_result = result
        return result

    def create(self, **params: Any) -> tuple[str, int]:
        result = self.call("session/create", params)
        return result["session"], result["pid"]

    def eval(self, session: str, code: str, on_note: Note | None = None, **params: Any) -> dict:
        return self.call("session/eval", {"session": session, "code": code, **params}, on_note)

    def send_eval(self, session: str, code: str, **params: Any) -> int:
        return self.send("session/eval", {"session": session, "code": code, **params})

    def close_session(self, session: str) -> None:
        self.call("session/close", {"session": session})

    def stats(self) -> dict:
        return self.call("server/stats")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]

    def __enter__(self) -> CellboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
