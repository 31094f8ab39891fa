"""JSON-RPC conformance cases as data, shared by the in-process and the live-server runners.

Each ``Case`` is one message body (``raw``: ``str`` or ``bytes``, never a raw newline) and the
reply a fresh server must send for it (``expect``):

- ``None``: no reply at all.
- a ``dict``: the reply object; it must contain every key given, recursively (``"jsonrpc":
  "2.0"`` is always checked). Scalars compare with their type (``1`` is not ``1.0`` nor
  ``True``), so ids must come back with their type kept.
- a ``list`` of dicts: a batch reply, in any order.
- a callable: a predicate on the decoded reply (``None`` when there was none).

``reply_from_server`` marks cases whose reply comes from the server, not the codec (e.g.
-32010 for an unknown session); the in-process runner stands in for a fresh server there.

A live runner writes ``raw + "\\n"`` to ``python -m cellbox serve`` (after one ``ping`` so the
framing is NDJSON: some raws would otherwise select LSP framing), reads one line, decodes it
with ``json.loads`` and checks it with ``matches``. To check "no reply", send a ``ping`` with a
fresh id right after: the next line must be its answer. No case has side effects on the server
(no ``shutdown``, ``exit``, or session creation), so all cases can share one server.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable

HUGE_ID = 123456789012345678901234567890


@dataclass(frozen=True)
class Case:
    name: str
    raw: str | bytes
    expect: dict[str, Any] | list[dict[str, Any]] | Callable[[Any], bool] | None
    reply_from_server: bool = False

    @property
    def body(self) -> bytes:
        """``raw`` as bytes (UTF-8 for ``str``)."""
        return self.raw if isinstance(self.raw, bytes) else self.raw.encode()


def matches(expect: Any, reply: Any) -> bool:
    """True iff ``reply`` (decoded JSON, or None) satisfies ``expect`` (see the module doc)."""
    if expect is None:
        return reply is None
    if callable(expect):
        return bool(expect(reply))
    if isinstance(expect, list):  # a batch: any order
        if not isinstance(reply, list) or len(reply) != len(expect):
            return False
        return any(
            all(_sub(e, r) for e, r in zip(expect, perm)) for perm in itertools.permutations(reply)
        )
    return _sub({"jsonrpc": "2.0", **expect}, reply)


def _sub(expect: Any, actual: Any) -> bool:
    # ``expect`` is contained in ``actual``: dicts by subset, lists in order, scalars by type.
    if isinstance(expect, dict):
        return isinstance(actual, dict) and all(
            k in actual and _sub(v, actual[k]) for k, v in expect.items()
        )
    if isinstance(expect, list):
        return isinstance(actual, list) and len(expect) == len(actual) and all(
            _sub(e, a) for e, a in zip(expect, actual)
        )
    return type(expect) is type(actual) and expect == actual


def _req(id: Any, method: str, params: Any = ..., *, id_text: str | None = None) -> str:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not ...:
        msg["params"] = params
    text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
    if id_text is not None:  # put the id's exact text in (floats, huge numbers, escapes)
        text = text.replace('"id":"__ID__"', f'"id":{id_text}')
    return text


def _note(method: str, params: Any = ...) -> str:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not ...:
        msg["params"] = params
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


def ok(id: Any, result: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id}
    if result is not None:
        out["result"] = result
    return out


def err(code: int, id: Any = None, **error: Any) -> dict[str, Any]:
    return {"id": id, "error": {"code": code, **error}}


def _no_result(reply: Any) -> bool:
    return isinstance(reply, dict) and "result" not in reply


def _batch(*parts: str) -> str:
    return "[" + ",".join(parts) + "]"


EVAL_BAD_CODE = {"session": "no-such-session", "code": 5}

CASES: list[Case] = [
    # --- ids ---------------------------------------------------------------------------------
    Case("ping int id", _req(1, "ping"), ok(1, {})),
    Case("ping zero id", _req(0, "ping"), ok(0, {})),
    Case("ping negative id", _req(-5, "ping"), ok(-5, {})),
    Case("ping string id", _req("abc", "ping"), ok("abc", {})),
    Case("ping empty string id", _req("", "ping"), ok("", {})),
    Case("ping numeric string id keeps str", _req("7", "ping"), ok("7", {})),
    Case(
        "ping unicode escaped id",
        _req("__ID__", "ping", id_text='"\\u00e9\\ud83d\\ude00"'),
        ok("é😀", {}),
    ),
    Case("ping null id", _req(None, "ping"), ok(None, {})),
    Case("ping huge id", _req("__ID__", "ping", id_text=str(HUGE_ID)), ok(HUGE_ID, {})),
    Case("ping huge negative id", _req("__ID__", "ping", id_text=f"-{HUGE_ID}"), ok(-HUGE_ID, {})),
    Case("float id", _req("__ID__", "ping", id_text="1.5"), err(-32600)),
    Case("integral float id", _req("__ID__", "ping", id_text="2.0"), err(-32600)),
    Case("exponent id", _req("__ID__", "ping", id_text="1e2"), err(-32600)),
    Case("bool id", _req(True, "ping"), err(-32600)),
    Case("array id", _req([1], "ping"), err(-32600)),
    Case("object id", _req({"a": 1}, "ping"), err(-32600)),
    # --- params ------------------------------------------------------------------------------
    Case("ping params null", _req(2, "ping", None), ok(2, {})),
    Case("ping params {}", _req(3, "ping", {}), ok(3, {})),
    Case("ping params []", _req(4, "ping", []), ok(4, {})),
    Case("ping unknown params fields ignored", _req(5, "ping", {"x": [1, {"y": None}]}), ok(5, {})),
    Case("ping positional params", _req(6, "ping", [1]), err(-32602, 6, message="Invalid params")),
    Case("ping string params", _req(7, "ping", "x"), err(-32602, 7)),
    Case(
        "eval code of wrong type, checked before the session",
        _req(8, "session/eval", EVAL_BAD_CODE),
        err(-32602, 8, message="Invalid params", data="Expected `str`, got `int` - at `$.code`"),
    ),
    Case(
        "eval without params",
        _req(9, "session/eval"),
        err(-32602, 9, data="Object missing required field `session`"),
    ),
    Case("eval positional params", _req(10, "session/eval", ["s", "1"]), err(-32602, 10)),
    Case(
        "eval bad option type",
        _req("e", "session/eval", {"session": "s", "code": "1", "allowStdin": "yes"}),
        err(-32602, "e", data="Expected `bool`, got `str` - at `$.allowStdin`"),
    ),
    Case(
        "eval negative timeout",
        _req(11, "session/eval", {"session": "s", "code": "1", "timeout": -1}),
        err(-32602, 11, data="Expected `float` >= 0.0 - at `$.timeout`"),
    ),
    Case(
        "eval valid params, unknown session",
        _req(12, "session/eval", {"session": "no-such-session", "code": "1"}),
        err(-32010, 12),
        reply_from_server=True,
    ),
    Case(
        "close unknown session",
        _req("c", "session/close", {"session": "no-such-session"}),
        err(-32010, "c"),
        reply_from_server=True,
    ),
    Case("close session of wrong type", _req(13, "session/close", {"session": 1}), err(-32602, 13)),
    # --- methods -----------------------------------------------------------------------------
    Case("unknown method", _req(20, "no/such/method"), err(-32601, 20, message="Method not found")),
    Case("unknown $/ request", _req(21, "$/unknownThing"), err(-32601, 21)),
    Case("notification name sent as request", _req(22, "initialized"), err(-32601, 22)),
    Case("method of wrong type", _req(23, 5), err(-32600)),  # type: ignore[arg-type]
    Case("missing method", '{"jsonrpc":"2.0","id":24}', err(-32600)),
    Case("missing jsonrpc", '{"id":25,"method":"ping"}', err(-32600)),
    Case("wrong jsonrpc version", '{"jsonrpc":"1.0","id":26,"method":"ping"}', err(-32600)),
    Case("numeric jsonrpc", '{"jsonrpc":2.0,"id":27,"method":"ping"}', err(-32600)),
    # --- notifications and responses ---------------------------------------------------------
    Case("initialized notification", _note("initialized"), None),
    Case("MCP initialized notification", _note("notifications/initialized", {}), None),
    Case("cancel of an unknown request", _note("$/cancelRequest", {"id": 999}), None),
    Case(
        "MCP cancel of an unknown request",
        _note("notifications/cancelled", {"requestId": 999}),
        None,
    ),
    Case("unknown $/ notification ignored", _note("$/setTrace", {"value": "off"}), None),
    Case("unknown notification ignored", _note("no/such/notification"), None),
    Case(
        "notification with bad params never answered",
        _note("$/cancelRequest", {"id": 1.5}),
        None,
    ),
    Case("request method sent as notification ignored", _note("ping"), None),
    Case("notification without jsonrpc", '{"method":"initialized"}', err(-32600)),
    Case("client response ignored", '{"jsonrpc":"2.0","id":77,"result":{}}', None),
    Case(
        "client error response ignored",
        '{"jsonrpc":"2.0","id":78,"error":{"code":1,"message":"x"}}',
        None,
    ),
    # --- not JSON, not a request -------------------------------------------------------------
    Case(
        "truncated JSON",
        '{"jsonrpc":"2.0","id":1,"method":"ping"',
        err(-32700, message="Parse error"),
    ),
    Case("garbage", "{this is not json}", err(-32700)),
    Case("trailing garbage", '{"jsonrpc":"2.0","id":1,"method":"ping"}x', err(-32700)),
    Case("single quotes", "{'jsonrpc':'2.0','id':1,'method':'ping'}", err(-32700)),
    Case("invalid UTF-8 byte", b"\xff\xfe", err(-32700)),
    Case(
        "invalid UTF-8 inside params",
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":"\xc3("}}',
        err(-32700),
    ),
    Case("too deeply nested", "[" * 100_000 + "]" * 100_000, err(-32700)),
    Case("number", "42", err(-32600)),
    Case("string", '"ping"', err(-32600)),
    Case("null", "null", err(-32600)),
    Case("empty object", "{}", err(-32600)),
    Case("surrounding whitespace", '   {"jsonrpc":"2.0","id":30,"method":"ping"}\t ', ok(30, {})),
    Case("non-ASCII UTF-8 accepted", _req("ü", "ping", {"näme": "ÿ€😀"}), ok("ü", {})),
    # --- batches -----------------------------------------------------------------------------
    Case("empty batch", "[]", err(-32600)),
    Case(
        "empty batch with space is one object",
        "[ ]",
        lambda r: isinstance(r, dict) and r["error"]["code"] == -32600,
    ),
    Case(
        "mixed batch",
        _batch(
            _req(40, "ping"),
            _note("initialized"),
            "5",
            _req("b", "no/such"),
            _req(41, "session/eval", EVAL_BAD_CODE),
            '{"jsonrpc":"2.0","id":9,"result":1}',
        ),
        [ok(40, {}), err(-32600), err(-32601, "b"), err(-32602, 41)],
    ),
    Case(
        "batch of notifications only",
        _batch(_note("initialized"), _note("$/cancelRequest", {"id": 1})),
        None,
    ),
    Case(
        "batch of ignored messages only",
        _batch(_note("$/x"), '{"jsonrpc":"2.0","id":1,"result":0}'),
        None,
    ),
    Case("batch of one invalid element", "[1]", [err(-32600)]),
    Case("batch of invalid elements", "[1,2,[]]", [err(-32600), err(-32600), err(-32600)]),
    Case("batch of one request", _batch(_req(42, "ping")), [ok(42, {})]),
    Case(
        "batch with huge and string ids",
        _batch(_req("__ID__", "ping", id_text=str(HUGE_ID)), _req("s", "ping")),
        [ok(HUGE_ID, {}), ok("s", {})],
    ),
    Case(
        "batch with unknown session",
        _batch(_req(43, "session/close", {"session": "no-such-session"})),
        [err(-32010, 43)],
        reply_from_server=True,
    ),
    Case("invalid JSON batch", "[" + _req(44, "ping") + ",", err(-32700)),
    Case("errors carry no result", "[1]", lambda r: all(_no_result(x) for x in r)),
]
