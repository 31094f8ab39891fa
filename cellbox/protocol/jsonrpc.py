"""JSON-RPC 2.0 codec: message bodies in, typed requests out; results and errors to bytes.

Theory of operation: decoding runs in two phases, both with msgspec decoders built once.

1. The **envelope**: the body becomes an ``_Envelope`` (or, for a batch, a list of ``Raw``
   elements, each then decoded as an envelope). ``id`` and ``params`` stay ``msgspec.Raw``:
   the id's exact JSON text is echoed in the reply (huge integers and strings come back
   unchanged, type kept), and params wait until the method is known.
2. The **params**: the method's params Struct (``messages.METHODS``/``NOTIFICATIONS``)
   validates them before the server looks anything up, so -32602 wins over -32010.

``Dispatcher.receive`` never raises on input: every body maps to exactly one of ``Request``,
``Notification``, ``Batch``, ``bytes`` (an encoded error reply to send as is) or ``None``
(nothing to send). The rules are PROTOCOL.md section 2; see ``Dispatcher.receive``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from cellbox.protocol.errors import (
    ERRORS_BY_CODE,
    CellboxError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
)
from cellbox.protocol.messages import METHODS, NOTIFICATIONS, SERVER_NOTIFICATIONS, RequestId

__all__ = [
    "Batch",
    "Dispatcher",
    "Notification",
    "Request",
    "encode_batch",
    "encode_error",
    "encode_notification",
    "encode_result",
]

class Request(msgspec.Struct, frozen=True):
    """A request to answer exactly once.

    ``id`` is the id's value (int, str or None for ``"id": null``); ``raw_id`` its exact JSON
    text, to pass to ``encode_result``/``encode_error``; ``params`` an instance of the method's
    params Struct, already validated.
    """

    id: RequestId
    raw_id: bytes
    method: str
    params: Any


class Notification(msgspec.Struct, frozen=True):
    """A valid notification the server handles; it never gets a reply."""

    method: str
    params: Any


class Batch(msgspec.Struct, frozen=True):
    """A non-empty JSON array of messages, in order; ignored elements are left out.

    Each item is a ``Request``, a ``Notification`` or ``bytes`` (an encoded error reply for an
    invalid element). The server answers with ``encode_batch`` of the replies to the requests
    and the error items; when there are none (a batch of notifications only) it sends nothing
    at all, per JSON-RPC 2.0.
    """

    items: list[Request | Notification | bytes]


class _Envelope(msgspec.Struct):
    jsonrpc: str | UnsetType = UNSET
    method: str | UnsetType = UNSET
    id: Raw | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET


class _ErrorObject(msgspec.Struct, omit_defaults=True):
    code: int
    message: str = ""
    data: Any = None


_message = msgspec.json.Decoder(_Envelope | list[Raw])
_element = msgspec.json.Decoder(_Envelope)
_id = msgspec.json.Decoder(RequestId)  # floats, bools, arrays, objects fail
_empty_array = msgspec.json.Decoder(list[Any])
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_NULL = Raw(b"null")


class _Params:
    """The decoder of one params type; built once per type."""

    __slots__ = ("decoder", "no_fields")

    def __init__(self, params_type: type) -> None:
        self.decoder = msgspec.json.Decoder(params_type)
        self.no_fields = not getattr(params_type, "__struct_fields__", True)

    def decode(self, raw: Raw | UnsetType) -> Any:
        """The params value; raises ``msgspec.ValidationError`` with msgspec's message."""
        if raw is UNSET or raw == _NULL:
            return self.decoder.decode(b"{}")
        try:
            return self.decoder.decode(raw)
        except msgspec.ValidationError:
            # Positional params are accepted only as ``[]`` for types without fields.
            if self.no_fields and _empty_array.decode(raw) == []:
                return self.decoder.decode(b"{}")
            raise


_PARAMS: dict[type, _Params] = {}


def _params_for(params_type: type) -> _Params:
    codec = _PARAMS.get(params_type)
    if codec is None:
        codec = _PARAMS[params_type] = _Params(params_type)
    return codec


for _type in [*(types[0] for types in METHODS.values()), *NOTIFICATIONS.values()]:
    _params_for(_type)
del _type


class Dispatcher:
    """Turns message bodies into typed requests, or into the error reply to send.

    ``methods`` maps a request method to ``(params type, result type)``; ``notifications``
    maps a notification method to its params type. Both default to PROTOCOL.md's tables and
    are copied, so ``register`` on one dispatcher affects only it.
    """

    def __init__(
        self,
        methods: dict[str, tuple[type, Any]] = METHODS,
        notifications: dict[str, type] = NOTIFICATIONS,
    ) -> None:
        self._methods = {name: _params_for(types[0]) for name, types in methods.items()}
        self._notifications = {name: _params_for(t) for name, t in notifications.items()}

    def register(self, method: str, params_type: type, *, notification: bool = False) -> None:
        """Accept ``method`` (a request, or a notification if asked) with ``params_type``.

        Replaces an earlier registration of the same name and kind.
        """
        table = self._notifications if notification else self._methods
        table[method] = _params_for(params_type)

    def receive(self, body: bytes) -> Request | Notification | Batch | bytes | None:
        """Decode one message body (what a framer yielded).

        Returns:

        - ``Request``: a valid request with valid params; the server must answer it once.
        - ``Notification``: a known notification with valid params; never answered.
        - ``Batch``: a non-empty array with at least one item to handle (see ``Batch``).
        - ``bytes``: an encoded error reply, to send as is: -32700 (not UTF-8, not JSON, or an
          empty body) and -32600 (not a request object: no ``"jsonrpc": "2.0"``, no string
          ``method``, an id that is a float, bool, object or array, an empty batch) with id
          null; -32601 (unknown method, ``$/`` ones included) and -32602 (params fail the
          method's Struct: ``data`` holds msgspec's message and path) with the request's id.
        - ``None``: nothing to send: a notification that is unknown (``$/`` or not), whose
          params are invalid, or sent with a request-only method name; a client's response
          object (``result`` or ``error`` without ``method``); a batch whose elements are all
          such.

        ``"id": null`` is a request answered with id null. Params may be absent, ``null`` or an
        object; ``[]`` only for methods without params fields, other arrays give -32602.
        """
        if not body.isascii():
            try:
                body.decode()
            except UnicodeDecodeError as exc:
                return _error(ParseError(data=f"invalid UTF-8 at byte {exc.start}"))
        try:
            message = _message.decode(body)
        except msgspec.ValidationError as exc:
            return _error(InvalidRequest(data=str(exc)))
        except msgspec.DecodeError as exc:
            return _error(ParseError(data=str(exc)))
        except RecursionError:
            return _error(ParseError(data="JSON nested too deeply"))
        if type(message) is list:
            return self._batch(message)
        return self._one(message)

    def _one(self, env: _Envelope) -> Request | Notification | bytes | None:
        method = env.method
        if method is UNSET:
            if env.result is not UNSET or env.error is not UNSET:
                return None  # a response from the client: we send no requests, ignore it
            return _error(InvalidRequest(data="missing `method`"))
        if env.jsonrpc != "2.0":
            return _error(InvalidRequest(data='`jsonrpc` must be "2.0"'))
        if env.id is UNSET:
            codec = self._notifications.get(method)
            if codec is None:
                return None
            try:
                return Notification(method, codec.decode(env.params))
            except (msgspec.DecodeError, RecursionError):
                return None
        raw_id = bytes(env.id)
        try:
            id_value = _id.decode(raw_id)
        except msgspec.DecodeError as exc:
            return _error(InvalidRequest(data=f"{exc} - at `$.id`"))
        codec = self._methods.get(method)
        if codec is None:
            return _error(MethodNotFound(data=method), raw_id)
        try:
            return Request(id_value, raw_id, method, codec.decode(env.params))
        except (msgspec.DecodeError, RecursionError) as exc:
            return _error(InvalidParams(data=str(exc)), raw_id)

    def _batch(self, elements: list[Raw]) -> Batch | bytes | None:
        if not elements:
            return _error(InvalidRequest(data="empty batch"))
        items: list[Request | Notification | bytes] = []
        for raw in elements:
            try:
                item = self._one(_element.decode(raw))
            except (msgspec.DecodeError, RecursionError) as exc:  # JSON, but not an object
                item = _error(InvalidRequest(data=str(exc)))
            if item is not None:
                items.append(item)
        return Batch(items) if items else None


# ---------------------------------------------------------------------------------------------
# Encoding


def encode_result(raw_id: bytes, result: Any) -> bytes:
    """A success reply. ``result``: a msgspec Struct, a dict, a list, a scalar or None.

    Raises ``TypeError`` if msgspec cannot encode ``result`` (a server bug: answer -32603).
    The body never contains a raw newline.
    """
    return b'{"jsonrpc":"2.0","id":%b,"result":%b}' % (raw_id, _encode(result))


def encode_error(raw_id: bytes | None, error: CellboxError) -> bytes:
    """An error reply; ``raw_id`` None means id null. ``data`` is omitted when None.

    Never raises: ``data`` that msgspec cannot encode is sent as its ``repr``.
    """
    obj = _ErrorObject(error.code, error.message, error.data)
    try:
        encoded = _encode(obj)
    except (TypeError, ValueError, OverflowError, RecursionError):
        encoded = _encode(_ErrorObject(error.code, str(error.message), repr(error.data)))
    return b'{"jsonrpc":"2.0","id":%b,"error":%b}' % (raw_id or b"null", encoded)


def _error(error: CellboxError, raw_id: bytes | None = None) -> bytes:
    return encode_error(raw_id, error)


def encode_notification(method: str, params: Any) -> bytes:
    """A notification from the server (e.g. ``session/output``); ``params`` as for results."""
    return b'{"jsonrpc":"2.0","method":%b,"params":%b}' % (_encode(method), _encode(params))


def encode_batch(bodies: list[bytes]) -> bytes:
    """A batch reply from encoded replies, in the given order.

    Raises ``ValueError`` when ``bodies`` is empty: such a batch gets no reply at all.
    """
    if not bodies:
        raise ValueError("an empty batch reply is never sent")
    return b"[%b]" % b",".join(bodies)


# ---------------------------------------------------------------------------------------------
# The client's side: requests out, replies and notifications in.


class Incoming(msgspec.Struct):
    """A reply or a notification from the server; ``result``/``params`` are decoded later,
    by the type the caller expects."""

    id: int | str | None | UnsetType = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: _ErrorObject | UnsetType = UNSET


_incoming = msgspec.json.Decoder(Incoming)
_results: dict[Any, msgspec.json.Decoder] = {}
_server_notifications = {
    method: msgspec.json.Decoder(tp) for method, tp in SERVER_NOTIFICATIONS.items()
}
_any = msgspec.json.Decoder()


def decode_incoming(body: bytes) -> Incoming:
    """Decode one message from the server (raises ``msgspec.DecodeError`` if it is not one)."""
    return _incoming.decode(body)


def result_decoder(result_type: Any) -> msgspec.json.Decoder:
    """The decoder for a result of ``result_type`` (built once per type)."""
    decoder = _results.get(result_type)
    if decoder is None:
        decoder = _results[result_type] = msgspec.json.Decoder(result_type)
    return decoder


def decode_notification(method: str, params: Raw | UnsetType) -> tuple[Any, bool]:
    """``(params, typed)``: the server notifications of PROTOCOL.md as their Structs
    (``typed`` True), anything else as plain JSON values."""
    raw = params if not isinstance(params, UnsetType) else b"null"
    decoder = _server_notifications.get(method)
    return (decoder or _any).decode(raw), decoder is not None


def encode_request(request_id: int, method: str, params: Any) -> bytes:
    """A request body; ``params`` None is left out."""
    if params is None:
        return b'{"jsonrpc":"2.0","id":%d,"method":%b}' % (request_id, _encoder.encode(method))
    return b'{"jsonrpc":"2.0","id":%d,"method":%b,"params":%b}' % (
        request_id,
        _encoder.encode(method),
        _encoder.encode(params),
    )


def error_from(obj: _ErrorObject) -> CellboxError:
    """The exception for an error reply: the class of its code, else the root with that code."""
    cls = ERRORS_BY_CODE.get(obj.code)
    if cls is not None:
        return cls(obj.message, obj.data)
    exc = CellboxError(obj.message, obj.data)
    exc.code = obj.code  # type: ignore[misc]  # an instance attribute for a code we do not know
    return exc
