"""cellbox: run Python cells for other programs.

A supervisor process (``cellbox serve``) owns sessions; each session is a child interpreter
with a persistent namespace and event loop. Clients talk JSON-RPC 2.0 over stdio.

The public API (imported lazily, so ``import cellbox`` stays cheap for the child interpreter,
which must not pay for anyio or the client):

- ``connect()``: the async client (``Client``, ``Session``, ``EvalStream``);
- ``Sandbox``: one session from synchronous code;
- ``EvalResult`` and the types inside it and around it (``Value``, ``ErrorInfo``, the
  streamed ``OutputNotification``/``DisplayNotification``/``InputRequestNotification``);
- ``CellboxError``, the root of every error (the subclass per JSON-RPC code lives in
  ``cellbox.protocol.errors``), and ``ServerGone``.
"""

__version__ = "0.1.0"

__all__ = [
    "CellboxError",
    "Client",
    "DisplayNotification",
    "ErrorInfo",
    "EvalResult",
    "EvalStream",
    "InputRequestNotification",
    "OutputNotification",
    "Sandbox",
    "ServerGone",
    "Session",
    "Value",
    "__version__",
    "connect",
]

_LAZY = {
    "Client": "cellbox.client",
    "EvalStream": "cellbox.client",
    "ServerGone": "cellbox.client",
    "Session": "cellbox.client",
    "connect": "cellbox.client",
    "Sandbox": "cellbox.sandbox",
    "CellboxError": "cellbox.protocol.errors",
    "DisplayNotification": "cellbox.protocol.messages",
    "ErrorInfo": "cellbox.protocol.messages",
    "EvalResult": "cellbox.protocol.messages",
    "InputRequestNotification": "cellbox.protocol.messages",
    "OutputNotification": "cellbox.protocol.messages",
    "Value": "cellbox.protocol.messages",
}

TYPE_CHECKING = False  # typing is not imported: the child must start fast
if TYPE_CHECKING:
    from cellbox.client import Client, EvalStream, ServerGone, Session, connect
    from cellbox.protocol.errors import CellboxError
    from cellbox.protocol.messages import (
        DisplayNotification,
        ErrorInfo,
        EvalResult,
        InputRequestNotification,
        OutputNotification,
        Value,
    )
    from cellbox.sandbox import Sandbox


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cellbox' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
