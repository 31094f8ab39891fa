"""The client's side of the protocol without I/O: requests out, replies and notifications in.

``ClientConnection`` is to the client what h11's ``Connection`` is to an HTTP client: it owns
the framer, the request ids and the table of pending calls, and nothing else. It never reads,
writes, sleeps, logs or looks at a clock; ``cellbox.client.shell.Client`` drives it over anyio
streams, and the unit tests drive it with bytes.

Theory of operation:

- ``send_request(method, params)`` allocates the next id (the client's own integers, from 1),
  records the call as pending and returns ``(id, bytes)``: the framed request to write.
  ``stream=True`` marks an eval: the output it causes is routed to it.
- ``receive_data(data)`` feeds the server's bytes to the framer and returns the events they
  complete, in the order the server sent them (``b""`` says the input ended: a last
  unterminated message is then complete):

  - a reply to a pending call ends it: ``Reply`` (the result decoded by the type the call
    asked for) or ``CallFailed`` (its JSON-RPC error as the ``CellboxError`` subclass of its
    code, or a result that does not decode);
  - a ``session/output``, ``session/display`` or ``session/inputRequest`` notification whose
    ``requestId`` names a pending streaming call becomes ``EvalEvent`` for that call;
  - any other notification becomes ``Notification`` (typed for those three methods, plain JSON
    values for others);
  - a reply to no pending call (one its caller abandoned) is dropped; what cannot be decoded
    becomes ``Ignored``, never an exception.
- ``cancel(id)`` forgets a pending call (its caller stopped waiting) and returns the
  ``$/cancelRequest`` to send, or None when the call had already ended.
- ``connection_lost(reason)`` ends the connection: every pending call fails with
  ``ServerGone``; later ``send_*`` raise it.

Invariants:

- every call sent ends exactly once: one ``Reply`` or ``CallFailed``, or ``cancel()`` by its
  caller; nothing about a call is reported after it ended;
- ``EvalEvent``s of a call come before its end, in the server's order, and only for the call
  whose id the notification carries;
- once lost, the connection stays lost: no event is ever returned again.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from msgspec import UnsetType

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

__all__ = [
    "CallFailed",
    "ClientConnection",
    "ConnectionEvent",
    "EvalEvent",
    "Event",
    "Ignored",
    "Notification",
    "Reply",
    "ServerGone",
]

#: What an eval streams before its result.
Event = m.OutputNotification | m.DisplayNotification | m.InputRequestNotification


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


# ---------------------------------------------------------------------------------------------
# Events


class Reply(msgspec.Struct, frozen=True):
    """The call ``request_id`` succeeded; ``value`` is its result, decoded."""

    request_id: int
    value: Any


class CallFailed(msgspec.Struct, frozen=True):
    """The call ``request_id`` failed: a JSON-RPC error, an undecodable result or
    ``ServerGone``; ``error`` is the exception its caller should raise."""

    request_id: int
    error: BaseException


class EvalEvent(msgspec.Struct, frozen=True):
    """Output, a display or an input request of the pending streaming call ``request_id``."""

    request_id: int
    event: Event


class Notification(msgspec.Struct, frozen=True):
    """A notification routed to no call: ``params`` typed for the server notifications of
    PROTOCOL.md (e.g. output printed between cells), plain JSON values otherwise."""

    method: str
    params: Any


class Ignored(msgspec.Struct, frozen=True):
    """Input that was dropped (a bad frame, an undecodable message, an error reply with id
    null); ``reason`` says why, for the log."""

    reason: str


ConnectionEvent = Reply | CallFailed | EvalEvent | Notification | Ignored


class _Pending(msgspec.Struct):
    method: str
    decoder: msgspec.json.Decoder
    stream: bool


# ---------------------------------------------------------------------------------------------
# The connection


class ClientConnection:
    """One client's protocol state: ids, pending calls and the framer (see the module doc).

    ``framing``: ``"ndjson"`` or ``"lsp"`` (Content-Length), for both directions.
    """

    def __init__(self, framing: str = "ndjson") -> None:
        if framing not in ("ndjson", "lsp"):
            raise ValueError(f"framing must be 'ndjson' or 'lsp', not {framing!r}")
        self._framer = LspFramer() if framing == "lsp" else NdjsonFramer()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._gone: str | None = None
        self._returncode: int | None = None

    @property
    def closed(self) -> bool:
        """True iff ``connection_lost`` was called: every ``send_*`` now raises ``ServerGone``."""
        return self._gone is not None

    @property
    def pending(self) -> frozenset[int]:
        """The ids of the calls sent and not yet ended (nor cancelled)."""
        return frozenset(self._pending)

    # -- out -------------------------------------------------------------------------------

    def send_request(self, method: str, params: Any = None, *, result_type: Any = Any, stream: bool = False) -> tuple[int, bytes]:
        """Record a call and return ``(request_id, bytes to write)``.

        ``params``: a msgspec Struct, a dict, or None for none; the reply's result is decoded
        as ``result_type``. ``stream=True``: the eval-event notifications carrying this id are
        routed to this call as ``EvalEvent``s. Raises ``ServerGone`` once the connection is
        lost (the call is then not recorded).
        """
        if self._gone is not None:
            raise self._gone_error(method)
        request_id = next(self._ids)
        body = encode_request(request_id, method, params)
        self._pending[request_id] = _Pending(method, result_decoder(result_type), stream)
        return request_id, self._framer.frame(body)

    def send_notification(self, method: str, params: Any = None) -> bytes:
        """The bytes of a notification (no reply). Raises ``ServerGone`` once lost."""
        if self._gone is not None:
            raise ServerGone(self._gone)
        return self._framer.frame(encode_notification(method, params))

    def cancel(self, request_id: int) -> bytes | None:
        """Forget the call ``request_id``: its caller stopped waiting, its late reply and
        events are dropped. Returns the ``$/cancelRequest`` to send so that the server stops
        the work, or None if there is nothing to stop (the call had ended, was never sent, or
        the connection is lost)."""
        if self._pending.pop(request_id, None) is None or self._gone is not None:
            return None
        return self._framer.frame(encode_notification("$/cancelRequest", {"id": request_id}))

    # -- in --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ConnectionEvent]:
        """Feed bytes from the server; return the events they complete, in order.

        ``b""`` means the input ended: an unterminated last message counts, the framer is
        reset, and the calls stay pending until ``connection_lost``. After the connection was
        lost, nothing is returned.
        """
        if self._gone is not None:
            return []
        items = self._framer.feed(data) if data else self._framer.close()
        events: list[ConnectionEvent] = []
        for item in items:
            self._route(item, events)
        return events

    def connection_lost(self, reason: str, returncode: int | None = None) -> list[CallFailed]:
        """End the connection: every pending call fails with ``ServerGone`` (its message names
        ``reason`` and the call's method; ``returncode`` is the server's exit status if
        known). Idempotent: a second call returns nothing and keeps the first reason."""
        if self._gone is not None:
            return []
        self._gone, self._returncode = reason, returncode
        pending, self._pending = self._pending, {}
        return [CallFailed(request_id, self._gone_error(call.method)) for request_id, call in pending.items()]

    # -- routing ---------------------------------------------------------------------------

    def _gone_error(self, method: str) -> ServerGone:
        exc = ServerGone(f"{self._gone}; no reply to `{method}` can come")
        exc.returncode = self._returncode
        return exc

    def _route(self, item: bytes | FrameError, events: list[ConnectionEvent]) -> None:
        match item:
            case FrameError(message=message):
                events.append(Ignored(f"bad frame from the server: {message}"))
            case _:  # a body (bytes; a slice of what was fed, whatever its type)
                event = self._message(item)
                if event is not None:
                    events.append(event)

    def _message(self, body: bytes) -> ConnectionEvent | None:
        try:
            msg = decode_incoming(body)
        except msgspec.DecodeError as exc:
            return Ignored(f"undecodable message from the server: {exc}")
        if not isinstance(msg.method, UnsetType):
            return self._notification(msg.method, msg.params)
        call = None if isinstance(msg.id, UnsetType) else self._pending_call(msg.id)
        if call is None:
            if not isinstance(msg.error, UnsetType) and msg.id is None:
                return Ignored(f"the server rejected a message: {msg.error}")
            return None  # the reply to a call its caller abandoned
        request_id, pending = call
        if not isinstance(msg.error, UnsetType):
            return CallFailed(request_id, error_from(msg.error))
        raw = msg.result if not isinstance(msg.result, UnsetType) else b"null"
        try:
            return Reply(request_id, pending.decoder.decode(raw))
        except msgspec.DecodeError as exc:
            return CallFailed(request_id, CellboxError(f"unexpected result for `{pending.method}`", data=str(exc)))

    def _pending_call(self, request_id: int | str | None) -> tuple[int, _Pending] | None:
        """Pop and return the pending call a reply's id names, if any."""
        if type(request_id) is not int:
            return None  # our ids are ints; ``True`` or ``"1"`` name no call
        call = self._pending.pop(request_id, None)
        return None if call is None else (request_id, call)

    def _notification(self, method: str, params: Any) -> Notification | EvalEvent | Ignored:
        try:
            value, typed = decode_notification(method, params)
        except msgspec.DecodeError as exc:
            return Ignored(f"bad {method} notification: {exc}")
        if typed:
            call = self._pending.get(value.request_id) if type(value.request_id) is int else None
            if call is not None and call.stream:
                return EvalEvent(value.request_id, value)
        return Notification(method, value)
