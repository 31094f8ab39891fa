"""The anyio shell of the client: ``Client`` drives a ``ClientConnection`` over byte streams.

``connect()`` spawns ``cellbox serve`` (or attaches to given streams), runs the reader task
and closes the server on exit; ``Client`` turns calls into the connection's bytes and its
events into woken callers. Everything about the protocol (ids, framing, routing replies and
eval events) is the connection's; this module owns the streams, the process, the tasks and
the deadlines. See ``cellbox.client`` for the invariants it keeps.
"""

from __future__ import annotations

import logging
import math
import os
import site
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, ByteSendStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from cellbox.client.connection import (
    CallFailed,
    ClientConnection,
    ConnectionEvent,
    EvalEvent,
    Ignored,
    Notification,
    Reply,
    ServerGone,
)
from cellbox.client.session import Session
from cellbox.protocol import messages as m

__all__ = ["Client", "OnNotification", "connect"]

log = logging.getLogger("cellbox.client")

OnNotification = Callable[[str, Any], None]


class _Waiter:
    """The caller's side of one pending call, set once: by its reply, its failure or the end
    of the connection. An eval's events go to ``events``, its reply (or failure) last."""

    __slots__ = ("done", "value", "error", "events")

    def __init__(self, events: MemoryObjectSendStream[Any] | None = None) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.events = events

    def resolve(self, value: Any) -> None:
        self.value = value
        self.push(value)
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.push(error)
        self.done.set()

    def push(self, item: Any) -> None:
        """Hand an eval's event (or final item) to its stream; dropped if nobody listens."""
        if self.events is not None:
            try:
                self.events.send_nowait(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass


# ---------------------------------------------------------------------------------------------
# The client


class Client:
    """A connection to one cellbox server; made by ``connect()``.

    Every method may raise ``ServerGone``, and the server's JSON-RPC errors as the
    ``cellbox.protocol.errors`` class of their code (``SessionNotFound``, ``InvalidParams``,
    ...). Methods may be called concurrently from many tasks of the loop that entered
    ``connect()``; calls on different sessions run in parallel on the server, evals on one
    session run one at a time in the order they were sent.
    """

    def __init__(
        self,
        receive: ByteReceiveStream,
        send: ByteSendStream,
        *,
        process: Process | None = None,
        framing: str = "ndjson",
        on_notification: OnNotification | None = None,
    ) -> None:
        self._receive = receive
        self._send_stream = send
        self._process = process
        self._conn = ClientConnection("lsp" if framing == "lsp" else "ndjson")  # connect() checks it
        self._on_notification = on_notification
        self._waiters: dict[int, _Waiter] = {}  # by request id: the calls the connection has pending
        self._send_lock = anyio.Lock()
        self._closing = False  # True once connect() is closing the connection on purpose
        self._reader_done = anyio.Event()

    # -- properties ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The server's process id, when ``connect()`` spawned it."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it exited (spawned servers only), else None."""
        return None if self._process is None else self._process.returncode

    @property
    def closed(self) -> bool:
        """True iff the connection has ended: every call now raises ``ServerGone``."""
        return self._conn.closed

    # -- generic calls ---------------------------------------------------------------------

    async def call(self, method: str, params: Any = None, *, result_type: Any = Any) -> Any:
        """Send any request and return its result decoded as ``result_type``.

        ``params``: a msgspec Struct, a dict, or None for none. The default ``result_type``
        gives plain JSON values (dicts, lists, ...); pass a type from
        ``cellbox.protocol.messages`` for a typed result. Cancelling the caller sends
        ``$/cancelRequest`` for the request.
        """
        request_id, waiter = await self._start(method, params, result_type)
        try:
            await waiter.done.wait()
        except BaseException:
            await self._abandon(request_id)
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (no reply), e.g. ``$/cancelRequest``."""
        await self._write(self._conn.send_notification(method, params))

    # -- server methods --------------------------------------------------------------------

    async def initialize(self, client_info: dict[str, Any] | None = None) -> m.InitializeResult:
        """The server's name, version, methods and default limits (optional: every method
        works without it)."""
        params = m.InitializeParams(client_info=client_info or {"name": "cellbox.client"})
        return await self.call("initialize", params, result_type=m.InitializeResult)

    async def ping(self) -> None:
        """Return once the server answered ``ping``."""
        await self.call("ping")

    async def create_session(
        self,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        limits: m.Limits | Mapping[str, Any] | None = None,
        detection: m.DetectionPolicy | Mapping[str, Any] | None = None,
    ) -> Session:
        """Start a session: a child interpreter with an empty namespace.

        ``env`` is merged over the server's environment; ``limits`` (``Limits`` or a dict
        with its snake_case or camelCase keys) override the server's defaults, e.g.
        ``{"timeout": 30, "memory_mb": 512}``. Raises ``SessionLimit`` or
        ``SessionStartFailed``. The session lives until ``Session.close()`` or the end of
        the connection; ``async with session:`` closes it on exit.
        """
        params = m.SessionCreateParams(
            name=name,
            cwd=None if cwd is None else os.fspath(cwd),
            env=None if env is None else dict(env),
            limits=_struct(limits, m.Limits),
            detection=_struct(detection, m.DetectionPolicy),
        )
        result = await self.call("session/create", params, result_type=m.SessionCreateResult)
        return Session(self, result.session, name=name, pid=result.pid, python=result.python)

    def session(self, session_id: str, name: str | None = None) -> Session:
        """A handle on an existing session (e.g. one from ``list_sessions()``); no request."""
        return Session(self, session_id, name=name)

    async def list_sessions(self) -> list[m.SessionInfo]:
        """The open sessions, their state and pids."""
        return (await self.call("session/list", result_type=m.SessionListResult)).sessions

    async def stats(self) -> m.ServerStats:
        """The server's counters (``server/stats``)."""
        return await self.call("server/stats", result_type=m.ServerStats)

    async def is_complete(self, code: str) -> m.IsCompleteResult:
        """Whether ``code`` is ready to run as typed at a console, and the indent to offer."""
        return await self.call("session/isComplete", m.IsCompleteParams(code=code), result_type=m.IsCompleteResult)

    async def shutdown(self) -> None:
        """Close every session; the server answers later requests with ``ShuttingDown``."""
        await self.call("shutdown")

    # -- plumbing --------------------------------------------------------------------------

    async def _start(
        self, method: str, params: Any, result_type: Any, events: MemoryObjectSendStream[Any] | None = None
    ) -> tuple[int, _Waiter]:
        """Send a request; return its id and the waiter its reply will set.

        With ``events``, the call streams: its eval events, then its reply, go there. Raises
        ``ServerGone`` if the connection has ended; if sending fails or is cancelled, the
        call is abandoned before the exception propagates.
        """
        request_id, data = self._conn.send_request(method, params, result_type=result_type, stream=events is not None)
        waiter = self._waiters[request_id] = _Waiter(events)
        try:
            await self._write(data)
        except BaseException:
            await self._abandon(request_id)
            raise
        return request_id, waiter

    @asynccontextmanager
    async def _stream(
        self, method: str, params: Any, result_type: Any
    ) -> AsyncIterator[tuple[int, MemoryObjectReceiveStream[Any]]]:
        """Send a request whose events, then its reply or failure, come on the yielded stream;
        abandon it on exit if it has not ended (see ``session.Caller``)."""
        send, receive = anyio.create_memory_object_stream[Any](math.inf)
        try:
            request_id, _ = await self._start(method, params, result_type, events=send)
            try:
                yield request_id, receive
            finally:
                await self._abandon(request_id)
        finally:
            send.close()
            receive.close()

    async def _write(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                await self._send_stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ServerGone(f"cannot write to the server: {exc!r}") from exc

    async def _abandon(self, request_id: int) -> None:
        """The caller stopped waiting for ``request_id``: forget it; ask the server to stop."""
        self._waiters.pop(request_id, None)
        cancel = self._conn.cancel(request_id)
        if cancel is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self._write(cancel)
            except ServerGone:
                pass

    async def _read_loop(self) -> None:
        """Route every message the server sends until its output ends; then fail every call."""
        reason = "the cellbox server closed its output"
        try:
            async for chunk in self._receive:
                if chunk:  # b"" would mean the end of input to the connection
                    self._handle(self._conn.receive_data(chunk))
            self._handle(self._conn.receive_data(b""))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            reason = f"the connection to the cellbox server broke ({exc!r})"
        except Exception:  # a bug here must fail the calls, not hang them
            log.exception("cellbox client: reader failed")
            reason = "the cellbox client's reader failed (a bug; see the log)"
        finally:
            self._reader_done.set()
            if self._process is not None and self._process.returncode is None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
                    await self._process.wait()  # name the exit status in the error
            self._lose(reason)

    async def _watch_process(self) -> None:
        """Fail the calls if the server exits while something else keeps its stdout open."""
        assert self._process is not None
        await self._process.wait()
        with anyio.move_on_after(0.5):
            await self._reader_done.wait()
        self._lose("the cellbox server exited")

    def _lose(self, reason: str) -> None:
        if self._conn.closed:
            return
        code = self.returncode
        if self._closing:
            reason = "the connection to the cellbox server was closed"
        elif code is not None:
            reason = f"the cellbox server exited with status {code}" + (
                f" (signal {-code})" if code < 0 else ""
            )
        self._handle(self._conn.connection_lost(reason, code))

    def _handle(self, events: Iterable[ConnectionEvent]) -> None:
        """Act on what the connection made of the server's bytes; never blocks."""
        for event in events:
            match event:
                case Reply(request_id=request_id, value=value):
                    if (waiter := self._waiters.pop(request_id, None)) is not None:
                        waiter.resolve(value)
                case CallFailed(request_id=request_id, error=error):
                    if (waiter := self._waiters.pop(request_id, None)) is not None:
                        waiter.fail(error)
                case EvalEvent(request_id=request_id, event=item):
                    if (waiter := self._waiters.get(request_id)) is not None:
                        waiter.push(item)
                case Notification(method=method, params=params):
                    if self._on_notification is not None:
                        try:
                            self._on_notification(method, params)
                        except Exception:
                            log.exception("cellbox client: on_notification raised")
                case Ignored(reason=reason):
                    log.warning("cellbox client: %s", reason)

    async def _finish(self, exit_timeout: float) -> None:
        """Close the server's stdin, wait for it to exit (kill it after ``exit_timeout``)."""
        self._closing = True
        try:
            await self._send_stream.aclose()
        except (anyio.BrokenResourceError, OSError):
            pass
        process = self._process
        if process is not None:
            with anyio.move_on_after(exit_timeout):
                await process.wait()
            if process.returncode is None:
                log.warning("cellbox client: the server did not exit within %s s; killing it", exit_timeout)
                process.kill()
                await process.wait()
        with anyio.move_on_after(exit_timeout if process is None else 1):
            await self._reader_done.wait()
        if process is not None:
            await process.aclose()
        else:
            await self._receive.aclose()
        self._lose("the connection to the cellbox server was closed")


def _struct(value: Any, tp: type) -> Any:
    if value is None or isinstance(value, tp):
        return value
    data = dict(value)
    # Accept snake_case keys too: the Struct's own names are camelCase on the wire.
    renamed = dict(zip(tp.__struct_fields__, tp.__struct_encode_fields__, strict=True))  # type: ignore[attr-defined]
    return msgspec.convert({renamed.get(k, k): v for k, v in data.items()}, tp)


# ---------------------------------------------------------------------------------------------
# connect()


def _server_env(env: Mapping[str, str] | None) -> dict[str, str]:
    full = dict(os.environ)
    full.update(env or {})
    # The server must run the same cellbox as this client, also from a source checkout that
    # is not installed; a site-packages directory is never put ahead of the stdlib.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = {os.path.abspath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in installed:
        path = full.get("PYTHONPATH", "")
        if root not in path.split(os.pathsep):
            full["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    return full


@asynccontextmanager
async def connect(
    *serve_args: str,
    env: Mapping[str, str] | None = None,
    streams: tuple[ByteReceiveStream, ByteSendStream] | None = None,
    stderr: int | IO[Any] | None = None,
    framing: str = "ndjson",
    on_notification: OnNotification | None = None,
    exit_timeout: float = 10.0,
) -> AsyncIterator[Client]:
    """Start ``python -m cellbox serve *serve_args`` and yield a ``Client`` for it.

    - ``serve_args``: flags of ``cellbox serve``, e.g. ``"--timeout", "30"``.
    - ``env``: variables merged over ``os.environ`` for the server (its sessions inherit them).
    - ``streams=(receive, send)``: attach to a server behind these anyio byte streams instead
      of spawning one (``serve_args``, ``env`` and ``stderr`` are then unused); leaving
      closes ``send`` and waits up to ``exit_timeout`` for the server's output to end.
    - ``stderr``: where the server's log goes: inherited (the default), a file, or
      ``subprocess.DEVNULL`` (not ``PIPE``: nobody would read it).
    - ``framing``: ``"ndjson"`` or ``"lsp"`` (Content-Length); the server follows the client.
    - ``on_notification(method, params)``: called in the event loop, and must not block, for
      each notification that is not routed to a running eval: output a session prints
      between cells (``OutputNotification`` whose ``request_id`` is a finished eval's),
      unknown methods (``params`` as plain JSON values).

    The server runs in its own session (``start_new_session``), so a Ctrl-C at the terminal
    reaches only this process. On exit, the server's stdin is closed and it closes every
    session and exits; after ``exit_timeout`` seconds it is killed. Calls still pending then
    raise ``ServerGone``.
    """
    if framing not in ("ndjson", "lsp"):
        raise ValueError(f"framing must be 'ndjson' or 'lsp', not {framing!r}")
    if stderr == subprocess.PIPE:
        raise ValueError("stderr=PIPE would block the server once the pipe is full; pass a file or DEVNULL")
    process: Process | None = None
    if streams is None:
        process = await anyio.open_process(
            [sys.executable, "-m", "cellbox", "serve", *serve_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_server_env(env),
            start_new_session=True,
        )
        assert process.stdout is not None and process.stdin is not None
        receive, send = process.stdout, process.stdin
    else:
        receive, send = streams
    client = Client(receive, send, process=process, framing=framing, on_notification=on_notification)
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client._read_loop)
            if process is not None:
                tg.start_soon(client._watch_process)
            try:
                yield client
            except BaseException as exc:
                body_error = exc  # re-raised below, unwrapped by the task group
            finally:
                with anyio.CancelScope(shield=True):
                    await client._finish(exit_timeout)
                tg.cancel_scope.cancel()
    finally:
        if process is not None and process.returncode is None:  # only on a bug above
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
    if body_error is not None:
        raise body_error
