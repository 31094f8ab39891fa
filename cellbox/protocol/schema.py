"""JSON Schema of the wire protocol, generated from the Structs the server decodes with.

``cellbox schema`` prints ``json.dumps(schema(), indent=2)``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cellbox.protocol.errors import ERRORS_BY_CODE
from cellbox.protocol.messages import (
    METHODS,
    NOTIFICATIONS,
    PROTOCOL_VERSION,
    SERVER_NOTIFICATIONS,
)

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_REF = "#/$defs/{name}"
_EMPTY_ARRAY = {"type": "array", "maxItems": 0}


def _params(params_type: type, generated: dict[str, Any]) -> dict[str, Any]:
    # Params without fields also accept ``[]`` (positional form), as the dispatcher does.
    if getattr(params_type, "__struct_fields__", None) == ():
        return {"anyOf": [generated, _EMPTY_ARRAY]}
    return generated


def schema() -> dict[str, Any]:
    """The schema document: one entry per method and notification, and the error codes.

    Shape: ``{"$schema", "title", "protocolVersion", "methods": {name: {"params",
    "result"}}, "notifications": {name: {"params"}}`` (client to server),
    ``"serverNotifications": {name: {"params"}}, "errors": [{code, name, message,
    description}], "$defs": {...}}``. Struct types are ``$ref``s into ``$defs``; a result of
    ``null`` is ``{"type": "null"}``. Keys follow the order of the tables in ``messages.py``,
    so the output is stable.
    """
    types: list[Any] = []
    for params_type, result_type in METHODS.values():
        types += [params_type, result_type]
    types += NOTIFICATIONS.values()
    types += SERVER_NOTIFICATIONS.values()
    generated, components = msgspec.json.schema_components(types, ref_template=_REF)
    it = iter(generated)

    methods = {}
    for name, (params_type, _result) in METHODS.items():
        methods[name] = {"params": _params(params_type, next(it)), "result": next(it)}
    notifications = {
        name: {"params": _params(params_type, next(it))}
        for name, params_type in NOTIFICATIONS.items()
    }
    server_notifications = {name: {"params": next(it)} for name in SERVER_NOTIFICATIONS}
    errors = [
        {
            "code": code,
            "name": cls.__name__,
            "message": cls.default_message,
            "description": (cls.__doc__ or "").strip(),
        }
        for code, cls in ERRORS_BY_CODE.items()
    ]
    return {
        "$schema": _DIALECT,
        "title": "cellbox wire protocol",
        "protocolVersion": PROTOCOL_VERSION,
        "methods": methods,
        "notifications": notifications,
        "serverNotifications": server_notifications,
        "errors": errors,
        "$defs": dict(sorted(components.items())),
    }
