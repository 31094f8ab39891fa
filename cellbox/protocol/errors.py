"""JSON-RPC errors of the cellbox protocol (PROTOCOL.md section 2), one class per code.

Every error the server answers with is a ``CellboxError``; ``jsonrpc.encode_error`` turns one
into a reply. Failures of user code are never errors: they are eval results.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CellboxError(Exception):
    """Root of every protocol error; ``code`` is its JSON-RPC error code.

    ``message`` defaults to the class's ``default_message``; ``data`` (any JSON value, or
    ``None`` for none) travels in the error object's ``data`` member, which is omitted when
    ``None``. Raised as is, the root means a bug in the server (-32603).
    """

    code: ClassVar[int] = -32603
    default_message: ClassVar[str] = "Internal error"

    message: str
    data: Any

    def __init__(self, message: str | None = None, data: Any = None) -> None:
        self.message = self.default_message if message is None else message
        self.data = data
        super().__init__(self.message)

    def __repr__(self) -> str:
        if self.data is None:
            return f"{type(self).__name__}({self.message!r})"
        return f"{type(self).__name__}({self.message!r}, data={self.data!r})"


class ParseError(CellboxError):
    """The message is not JSON (or not UTF-8); answered with id null."""

    code = -32700
    default_message = "Parse error"


class InvalidRequest(CellboxError):
    """The message is JSON but not a JSON-RPC 2.0 request object; answered with id null."""

    code = -32600
    default_message = "Invalid Request"


class MethodNotFound(CellboxError):
    """The method is unknown (also an unknown ``$/`` request)."""

    code = -32601
    default_message = "Method not found"


class InvalidParams(CellboxError):
    """The params fail the method's schema; ``data`` holds msgspec's message with the path."""

    code = -32602
    default_message = "Invalid params"


class InternalError(CellboxError):
    """A bug in the server; the server keeps running."""

    code = -32603
    default_message = "Internal error"


class RequestCancelled(CellboxError):
    """A non-eval request was cancelled by ``$/cancelRequest``."""

    code = -32800
    default_message = "Request cancelled"


class SessionNotFound(CellboxError):
    """The session id is unknown or the session is closed."""

    code = -32010
    default_message = "Session not found"


class SessionLimit(CellboxError):
    """``--max-sessions`` sessions are already open."""

    code = -32011
    default_message = "Session limit reached"


class SessionStartFailed(CellboxError):
    """The child interpreter could not start; ``data`` says why."""

    code = -32012
    default_message = "Session start failed"


class ShuttingDown(CellboxError):
    """A request arrived after ``shutdown``."""

    code = -32013
    default_message = "Server is shutting down"


#: JSON-RPC error code -> the class raised for it (the root is not listed).
ERRORS_BY_CODE: dict[int, type[CellboxError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        RequestCancelled,
        SessionNotFound,
        SessionLimit,
        SessionStartFailed,
        ShuttingDown,
    )
}
