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

Theory of operation: one reader task turns the server's bytes into message bodies (the same
framers as the server, ``protocol/framing.py``) and routes each body at once, never blocking:
a reply goes to the call waiting on its id (ids are the client's own integers); a
``session/output``, ``session/display`` or ``session/inputRequest`` notification goes to the
eval whose ``requestId`` it carries; anything else goes to ``on_notification``.

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

from __future__ import annotations

import inspect
import itertools
import logging
import math
import os
import site
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, ByteSendStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import Raw, UnsetType

from cellbox.protocol import messages as m
from cellbox.protocol.errors import CellboxError
from cellbox.protocol.framing import FrameError, LspFramer, NdjsonFramer
from cellbox.protocol.jsonrpc import (
    decode_incoming,
    decode_notification,
    encode_notification,
    encode_request,
    error_from,
    result_decoder,
)

__all__ = ["Client", "EvalStream", "Event", "ServerGone", "Session", "connect"]

log = logging.getLogger("cellbox.client")

#: What an eval streams before its result.
Event = m.OutputNotification | m.DisplayNotification | m.InputRequestNotification

OnOutput = Callable[[Event], None | Awaitable[None]]
OnInput = Callable[[m.InputRequestNotification], str | Awaitable[str]]
OnNotification = Callable[[str, Any], None]


class ServerGone(CellboxError):
    """The server exited or the connection closed before a reply came.

    Raised by every call pending at that moment and by every later call. It never travels on
    the wire: its ``code`` (-32099, in JSON-RPC's range for implementation errors) only lets
    code that handles ``CellboxError.code`` tell it apart. ``returncode`` is the server's exit
    status when the client spawned it and it had exited, else None.
    """

    code = -32099
    default_message = "the cellbox server is gone"
    returncode: int | None = None


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class _Call:
    """A request waiting for its reply. An eval's reply (or failure) is its last event."""

    __slots__ = ("method", "decoder", "done", "value", "error", "events")

    def __init__(self, method: str, decoder: msgspec.json.Decoder, events: MemoryObjectSendStream[Any] | None = None) -> None:
        self.method = method
        self.decoder = decoder
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
        self._framer = LspFramer() if framing == "lsp" else NdjsonFramer()
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._calls: dict[Any, _Call] = {}
        self._send_lock = anyio.Lock()
        self._gone: str | None = None  # why the connection ended, once it has
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
        return self._gone is not None

    # -- generic calls ---------------------------------------------------------------------

    async def call(self, method: str, params: Any = None, *, result_type: Any = Any) -> Any:
        """Send any request and return its result decoded as ``result_type``.

        ``params``: a msgspec Struct, a dict, or None for none. The default ``result_type``
        gives plain JSON values (dicts, lists, ...); pass a type from
        ``cellbox.protocol.messages`` for a typed result. Cancelling the caller sends
        ``$/cancelRequest`` for the request.
        """
        call = _Call(method, result_decoder(result_type))
        request_id = self._register(call)
        try:
            await self._send(encode_request(request_id, method, params))
            await call.done.wait()
        except BaseException:
            await self._abandon(request_id)
            raise
        if call.error is not None:
            raise call.error
        return call.value

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (no reply), e.g. ``$/cancelRequest``."""
        await self._send(encode_notification(method, params))

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

    def _register(self, call: _Call) -> int:
        if self._gone is not None:
            raise self._gone_error(call.method)
        request_id = next(self._ids)
        self._calls[request_id] = call
        return request_id

    def _gone_error(self, method: str) -> ServerGone:
        exc = ServerGone(f"{self._gone}; no reply to `{method}` can come")
        exc.returncode = self.returncode
        return exc

    async def _send(self, body: bytes) -> None:
        if self._gone is not None:
            raise ServerGone(self._gone)
        data = self._framer.frame(body)
        try:
            async with self._send_lock:
                await self._send_stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ServerGone(f"cannot write to the server: {exc!r}") from exc

    async def _abandon(self, request_id: int) -> None:
        """The caller stopped waiting for ``request_id``: forget it; ask the server to stop."""
        call = self._calls.pop(request_id, None)
        if call is None or call.done.is_set() or self._gone is not None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self.notify("$/cancelRequest", {"id": request_id})
            except ServerGone:
                pass

    async def _read_loop(self) -> None:
        """Route every message the server sends until its output ends; then fail every call."""
        reason = "the cellbox server closed its output"
        try:
            async for chunk in self._receive:
                for item in self._framer.feed(chunk):
                    self._dispatch(item)
            for item in self._framer.close():
                self._dispatch(item)
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
        if self._gone is not None:
            return
        code = self.returncode
        if self._closing:
            reason = "the connection to the cellbox server was closed"
        elif code is not None:
            reason = f"the cellbox server exited with status {code}" + (
                f" (signal {-code})" if code < 0 else ""
            )
        self._gone = reason
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.fail(self._gone_error(call.method))

    def _dispatch(self, item: bytes | FrameError) -> None:
        if isinstance(item, FrameError):
            log.warning("cellbox client: bad frame from the server: %s", item.message)
            return
        try:
            msg = decode_incoming(item)
        except msgspec.DecodeError as exc:
            log.warning("cellbox client: undecodable message from the server: %s", exc)
            return
        if not isinstance(msg.method, UnsetType):
            self._notification(msg.method, msg.params)
            return
        call = self._calls.pop(msg.id, None) if not isinstance(msg.id, UnsetType) else None
        if call is None:
            if not isinstance(msg.error, UnsetType) and msg.id is None:
                log.warning("cellbox client: the server rejected a message: %s", msg.error)
            return  # the reply to a call its caller abandoned
        if not isinstance(msg.error, UnsetType):
            call.fail(error_from(msg.error))
            return
        try:
            call.resolve(call.decoder.decode(msg.result if not isinstance(msg.result, UnsetType) else b"null"))
        except msgspec.DecodeError as exc:
            call.fail(CellboxError(f"unexpected result for `{call.method}`", data=str(exc)))

    def _notification(self, method: str, params: Raw | UnsetType) -> None:
        try:
            value, typed = decode_notification(method, params)
        except msgspec.DecodeError as exc:
            log.warning("cellbox client: bad %s notification: %s", method, exc)
            return
        if typed:
            call = self._calls.get(value.request_id)
            if call is not None and call.events is not None:
                call.push(value)
                return
        if self._on_notification is not None:
            try:
                self._on_notification(method, value)
            except Exception:
                log.exception("cellbox client: on_notification raised")

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
# Sessions and evals


class Session:
    """One session on the server: a child interpreter with a persistent namespace.

    ``id`` is the server's session id, ``pid`` the child's (updated by ``restart()``).
    ``async with session:`` closes it on exit.
    """

    def __init__(
        self, client: Client, session_id: str, *, name: str | None = None, pid: int | None = None, python: str | None = None
    ) -> None:
        self.client = client
        self.id = session_id
        self.name = name
        self.pid = pid
        self.python = python

    def __repr__(self) -> str:
        return f"<cellbox.Session {self.id} name={self.name!r} pid={self.pid}>"

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.close()
            except CellboxError:
                pass  # already closed, or the server is gone: nothing left to close

    async def eval(
        self,
        code: str,
        timeout: float | None = None,
        allow_stdin: bool = False,
        silent: bool = False,
        on_output: OnOutput | None = None,
        *,
        on_input: OnInput | None = None,
        collect_output: bool = True,
    ) -> m.EvalResult:
        """Run ``code`` in the session and return its ``EvalResult``.

        A failure of the code is a result, not an exception: check ``result.status``
        (``ok``, ``error``, ``interrupted``, ``timeout``, ``killed``) and ``state_lost``.

        - ``timeout``: seconds from the moment the cell starts running; None: the session's
          default (``0``: none).
        - ``on_output(event)`` (a function or a coroutine function) gets each
          ``OutputNotification``/``DisplayNotification`` as it arrives, and each
          ``InputRequestNotification`` that ``on_input`` does not answer.
        - ``on_input(request)`` returns (or awaits) the line for each ``input()`` of the
          code; giving it turns ``allow_stdin`` on. With ``allow_stdin`` and no ``on_input``,
          answer with ``send_input`` (else the code waits until its timeout).
        - ``silent``: no value, ``_`` and execution count unchanged.
        - ``collect_output=False``: the result's ``stdout``/``stderr``/``displays`` are None
          (the events still arrive).

        Cancelling the caller interrupts the code on the server (``$/cancelRequest``).
        """
        async with self.stream(
            code, timeout=timeout, allow_stdin=allow_stdin or on_input is not None, silent=silent, collect_output=collect_output
        ) as events:
            async for event in events:
                if isinstance(event, m.EvalResult):
                    return event
                if on_input is not None and isinstance(event, m.InputRequestNotification):
                    await events.send_input(await _maybe_await(on_input(event)))
                elif on_output is not None:
                    await _maybe_await(on_output(event))
        raise AssertionError("unreachable: an eval stream ends with its result or an exception")

    @asynccontextmanager
    async def stream(
        self,
        code: str,
        *,
        timeout: float | None = None,
        allow_stdin: bool = False,
        silent: bool = False,
        collect_output: bool = True,
    ) -> AsyncIterator[EvalStream]:
        """Run ``code`` and iterate over what it produces, as it arrives::

            async with session.stream(code) as events:
                async for event in events:
                    match event:
                        case OutputNotification(stream=s, text=t): ...
                        case DisplayNotification(data=d): ...
                        case InputRequestNotification(): await events.send_input("42")
                        case EvalResult(): ...          # always the last event

        The iterator yields ``OutputNotification``, ``DisplayNotification`` and
        ``InputRequestNotification`` events in the server's order, then the ``EvalResult``,
        then stops; ``events.result`` holds the result once it came. If the server goes
        away the iteration raises ``ServerGone``. Leaving the block before the result came
        (``break``, an exception, cancellation) interrupts the code on the server
        (``$/cancelRequest``) and drops the rest. Parameters as for ``eval()``.
        """
        client = self.client
        params = m.EvalParams(
            session=self.id,
            code=code,
            timeout=timeout,
            allow_stdin=allow_stdin,
            collect_output=collect_output,
            silent=silent,
        )
        send, receive = anyio.create_memory_object_stream[Any](math.inf)
        request_id: int | None = None
        try:
            request_id = client._register(_Call("session/eval", result_decoder(m.EvalResult), events=send))
            await client._send(encode_request(request_id, "session/eval", params))
            yield EvalStream(self, request_id, receive)
        finally:
            if request_id is not None:
                await client._abandon(request_id)
            send.close()
            receive.close()

    async def interrupt(self, request_id: int | None = None) -> bool:
        """Interrupt the running eval (or the one named, dropping it if still queued).

        True iff an eval was hit. The eval still returns its result, ``interrupted`` (or
        ``killed`` with ``state_lost`` if the child ignored the interrupt past the grace).
        """
        params = m.SessionInterruptParams(session=self.id, request_id=request_id)
        result = await self.client.call("session/interrupt", params, result_type=m.SessionInterruptResult)
        return result.interrupted

    async def restart(self) -> m.SessionRestartResult:
        """A fresh child, empty namespace, same id and options; running and queued evals end
        ``killed`` with cause ``restart``."""
        result = await self.client.call("session/restart", m.SessionParams(session=self.id), result_type=m.SessionRestartResult)
        self.pid = result.pid
        return result

    async def close(self) -> None:
        """Kill the child and its descendants; later calls raise ``SessionNotFound``."""
        await self.client.call("session/close", m.SessionParams(session=self.id))

    async def complete(self, code: str, cursor: int | None = None) -> m.CompleteResult:
        """Completions at ``cursor`` (code points; default: the end) from the live namespace:
        each match replaces ``code[cursor_start:cursor_end]``."""
        params = m.CodeCursorParams(session=self.id, code=code, cursor=len(code) if cursor is None else cursor)
        return await self.client.call("session/complete", params, result_type=m.CompleteResult)

    async def inspect(self, code: str, cursor: int | None = None) -> m.InspectResult:
        """Signature and docstring of the name at ``cursor`` (default: the end)."""
        params = m.CodeCursorParams(session=self.id, code=code, cursor=len(code) if cursor is None else cursor)
        return await self.client.call("session/inspect", params, result_type=m.InspectResult)

    async def is_complete(self, code: str) -> m.IsCompleteResult:
        """Whether ``code`` is ready to run as typed at a console, and the indent to offer."""
        params = m.IsCompleteParams(code=code, session=self.id)
        return await self.client.call("session/isComplete", params, result_type=m.IsCompleteResult)

    async def send_input(self, request_id: int | str, text: str) -> None:
        """Answer the ``input()`` of the running eval ``request_id`` (see ``InputRequestNotification``)."""
        params = m.InputParams(session=self.id, request_id=request_id, text=text)
        await self.client.call("session/input", params)


class EvalStream:
    """The events of one running eval; see ``Session.stream``.

    ``request_id`` is the eval's JSON-RPC id (the ``requestId`` of its events); ``result``
    is None until the ``EvalResult`` has been yielded.
    """

    def __init__(self, session: Session, request_id: int, receive: MemoryObjectReceiveStream[Any]) -> None:
        self.session = session
        self.request_id = request_id
        self.result: m.EvalResult | None = None
        self._receive = receive
        self._ended = False

    def __aiter__(self) -> EvalStream:
        return self

    async def __anext__(self) -> Event | m.EvalResult:
        if self._ended:
            raise StopAsyncIteration
        try:
            item = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ended = True
            raise StopAsyncIteration from None
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if isinstance(item, m.EvalResult):
            self._ended = True
            self.result = item
        return item

    async def send_input(self, text: str) -> None:
        """Answer this eval's pending ``input()``."""
        await self.session.send_input(self.request_id, text)

    async def interrupt(self) -> bool:
        """Interrupt this eval (drop it if it is still queued); its result still comes."""
        return await self.session.interrupt(self.request_id)


# ---------------------------------------------------------------------------------------------
# connect()


def _server_env(env: Mapping[str, str] | None) -> dict[str, str]:
    full = dict(os.environ)
    full.update(env or {})
    # The server must run the same cellbox as this client, also from a source checkout that
    # is not installed; a site-packages directory is never put ahead of the stdlib.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
