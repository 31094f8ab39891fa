"""Sessions and evals: what a ``Client`` hands out for one child interpreter.

A ``Session`` is a handle (the server's session id and the ``Client`` to call through); it
holds no state of its own besides the child's pid. ``Session.stream`` sends an eval and yields
an ``EvalStream`` over the events the client routes to it; ``Session.eval`` consumes that
stream with callbacks.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from cellbox.client.connection import Event
from cellbox.protocol import messages as m
from cellbox.protocol.errors import CellboxError

__all__ = ["Caller", "EvalStream", "OnInput", "OnOutput", "Session"]

OnOutput = Callable[[Event], None | Awaitable[None]]
OnInput = Callable[[m.InputRequestNotification], str | Awaitable[str]]


class Caller(Protocol):
    """What a ``Session`` needs of the client it calls through; ``Client`` is one.

    ``_stream`` sends a request whose events (then its reply, or its failure as an exception
    object) arrive on the yielded receive stream, and abandons the call on exit if it has
    not ended (``$/cancelRequest``).
    """

    async def call(self, method: str, params: Any = None, *, result_type: Any = Any) -> Any: ...

    def _stream(
        self, method: str, params: Any, result_type: Any
    ) -> AbstractAsyncContextManager[tuple[int, MemoryObjectReceiveStream[Any]]]: ...


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Session:
    """One session on the server: a child interpreter with a persistent namespace.

    ``id`` is the server's session id, ``pid`` the child's (updated by ``restart()``).
    ``async with session:`` closes it on exit.
    """

    def __init__(
        self, client: Caller, session_id: str, *, name: str | None = None, pid: int | None = None, python: str | None = None
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
                match event:
                    case m.EvalResult():
                        return event
                    case m.InputRequestNotification() if on_input is not None:
                        await events.send_input(await _maybe_await(on_input(event)))
                    case _ if on_output is not None:
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
        params = m.EvalParams(
            session=self.id,
            code=code,
            timeout=timeout,
            allow_stdin=allow_stdin,
            collect_output=collect_output,
            silent=silent,
        )
        async with self.client._stream("session/eval", params, m.EvalResult) as (request_id, receive):
            yield EvalStream(self, request_id, receive)

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

    async def send_input(self, request_id: int | str, text: str, prompt_id: int | None = None) -> None:
        """Answer the ``input()`` of the running eval ``request_id`` (see
        ``InputRequestNotification``); with ``prompt_id``, only that prompt."""
        params = m.InputParams(session=self.id, request_id=request_id, text=text, prompt_id=prompt_id)
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
        self._prompt_id: int | None = None  # of the last ``InputRequestNotification`` yielded
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
        match item:
            case BaseException():  # the eval failed: a JSON-RPC error or ServerGone
                self._ended = True
                raise item
            case m.EvalResult():
                self._ended = True
                self.result = item
            case m.InputRequestNotification(prompt_id=prompt_id):
                self._prompt_id = prompt_id
        return item

    async def send_input(self, text: str) -> None:
        """Answer the ``input()`` prompt this stream yielded last (only that one)."""
        await self.session.send_input(self.request_id, text, self._prompt_id)

    async def interrupt(self) -> bool:
        """Interrupt this eval (drop it if it is still queued); its result still comes."""
        return await self.session.interrupt(self.request_id)
