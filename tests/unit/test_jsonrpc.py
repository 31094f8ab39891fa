"""The JSON-RPC codec: PROTOCOL.md section 2, rule by rule, and the error classes."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellbox.protocol import errors
from cellbox.protocol.errors import (
    ERRORS_BY_CODE,
    CellboxError,
    InternalError,
    InvalidParams,
    SessionNotFound,
)
from cellbox.protocol.jsonrpc import (
    Batch,
    Dispatcher,
    Notification,
    Request,
    encode_batch,
    encode_error,
    encode_notification,
    encode_result,
)
from cellbox.protocol.messages import (
    METHODS,
    CancelRequestParams,
    EmptyParams,
    EvalParams,
    EvalResult,
    Params,
)

HUGE = 123456789012345678901234567890


def receive(message: dict | list | str | bytes, dispatcher: Dispatcher | None = None):
    body = message if isinstance(message, bytes) else (
        message.encode() if isinstance(message, str) else json.dumps(message).encode()
    )
    return (dispatcher or Dispatcher()).receive(body)


def reply(message) -> dict:
    out = receive(message)
    assert isinstance(out, bytes), out
    return json.loads(out)


def req(method: str, params=None, id=1, **extra) -> dict:
    msg = {"jsonrpc": "2.0", "id": id, "method": method, **extra}
    if params is not None:
        msg["params"] = params
    return msg


def note(method: str, params=None) -> dict:
    msg = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def assert_error(out: dict, code: int, id=None) -> dict:
    assert out["jsonrpc"] == "2.0"
    assert out["id"] == id and type(out["id"]) is type(id)
    assert "result" not in out
    assert out["error"]["code"] == code
    assert out["error"]["message"] == ERRORS_BY_CODE[code].default_message
    return out["error"]


# ---------------------------------------------------------------------------------------------
# Requests and ids


@pytest.mark.parametrize(
    ("raw_id", "value"),
    [(b"1", 1), (b"0", 0), (b"-7", -7), (b'"abc"', "abc"), (b'""', ""), (b"null", None),
     (str(HUGE).encode(), HUGE), (b"-" + str(HUGE).encode(), -HUGE), (b'"a\\u00e9\\n"', "aé\n")],
)
def test_request_ids_keep_value_type_and_exact_text(raw_id, value):
    body = b'{"jsonrpc":"2.0","id":%b,"method":"ping"}' % raw_id
    out = Dispatcher().receive(body)
    assert isinstance(out, Request)
    assert out.id == value and type(out.id) is type(value)
    assert out.raw_id == raw_id
    assert out.method == "ping" and out.params == EmptyParams()
    assert encode_result(out.raw_id, {}) == b'{"jsonrpc":"2.0","id":%b,"result":{}}' % raw_id


@pytest.mark.parametrize("raw_id", [b"1.0", b"1.5", b"1e3", b"true", b"false", b"[1]", b'{"a":1}'])
def test_ids_of_other_types_are_invalid_with_id_null(raw_id):
    out = Dispatcher().receive(b'{"jsonrpc":"2.0","id":%b,"method":"ping"}' % raw_id)
    assert_error(json.loads(out), -32600)


def test_huge_id_is_echoed_digit_for_digit_in_errors_too():
    out = Dispatcher().receive(b'{"jsonrpc":"2.0","id":%d,"method":"nope"}' % HUGE)
    assert b'"id":%d,' % HUGE in out
    assert_error(json.loads(out), -32601, HUGE)


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1, "method": "ping"},  # no jsonrpc
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": 2.0, "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1, "method": None},
        {"jsonrpc": "2.0", "id": 1},  # no method, no result
        {"jsonrpc": "2.0"},
        {},
        {"method": "initialized"},  # not a valid notification either
        {"jsonrpc": "2.0", "method": ["x"]},
    ],
)
def test_not_a_request_object_is_invalid_request_with_id_null(message):
    assert_error(reply(message), -32600)


@pytest.mark.parametrize("body", [b"5", b'"ping"', b"null", b"true", b"  3.5 "])
def test_json_that_is_not_an_object_or_array_is_invalid_request(body):
    assert_error(reply(body), -32600)


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"{", b'{"jsonrpc":"2.0",', b"not json", b'{"a":1}x', b"{'a': 1}", b"[1,]",
     b"NaN", b"[" * 100_000 + b"]" * 100_000],
)
def test_not_json_is_parse_error_with_id_null(body):
    assert_error(reply(body), -32700)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b'{"jsonrpc":"2.0","id":1,"method":"\xff"}',
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xc3"}}',  # inside Raw params
        b'{"jsonrpc":"2.0","id":1,"method":"ping","junk":"\xed\xa0\x80"}',  # a surrogate
    ],
)
def test_invalid_utf8_anywhere_is_parse_error(body):
    assert_error(reply(body), -32700)


def test_nesting_depth_never_raises():
    # How deep msgspec may go depends on the Python version's recursion limits: too deep is a
    # parse error, anything shallower is judged as usual (here: a batch of one non-request).
    for depth in (10, 1000, 5000, 20_000):
        out = receive(b"[" * depth + b"]" * depth)
        if isinstance(out, bytes):
            assert_error(json.loads(out), -32700)
        else:
            assert isinstance(out, Batch) and len(out.items) == 1
            assert_error(json.loads(out.items[0]), -32600)


def test_valid_utf8_passes():
    params = '{"session":"s","code":"π"}'
    out = receive('{"jsonrpc":"2.0","id":"é😀","method":"session/eval","params":%s}' % params)
    assert isinstance(out, Request) and out.id == "é😀" and out.params.code == "π"
    assert out.raw_id == '"é😀"'.encode()


def test_whitespace_around_a_message_is_fine():
    assert isinstance(receive(b' \t{"jsonrpc":"2.0","id":1,"method":"ping"}\r '), Request)


# ---------------------------------------------------------------------------------------------
# Methods and params


def test_unknown_method_and_unknown_dollar_request_get_method_not_found_with_id():
    assert_error(reply(req("nope", id="x")), -32601, "x")
    err = assert_error(reply(req("$/unknown", id=3)), -32601, 3)
    assert err["data"] == "$/unknown"


def test_request_only_known_notification_names_are_not_methods():
    assert_error(reply(req("initialized")), -32601, 1)
    assert_error(reply(req("$/cancelRequest", {"id": 1})), -32601, 1)


def test_invalid_params_data_carries_msgspec_path():
    err = assert_error(reply(req("session/eval", {"session": "s", "code": 5}, id=7)), -32602, 7)
    assert err["data"] == "Expected `str`, got `int` - at `$.code`"
    err = assert_error(reply(req("session/create", {"limits": {"memoryMb": 0}})), -32602, 1)
    assert err["data"] == "Expected `int` >= 1 - at `$.limits.memoryMb`"


def test_missing_required_params_field():
    err = assert_error(reply(req("session/eval", id="a")), -32602, "a")
    assert err["data"] == "Object missing required field `session`"
    err = assert_error(reply(req("session/eval", {"session": "s"})), -32602, 1)
    assert err["data"] == "Object missing required field `code`"


def test_params_are_validated_before_any_lookup():
    # The codec passes a valid request on (the server answers -32010 for an unknown session)
    # and answers -32602 itself otherwise: -32602 always wins.
    out = receive(req("session/close", {"session": "no-such-session"}))
    assert isinstance(out, Request) and out.params.session == "no-such-session"
    assert_error(reply(req("session/close", {"session": 1})), -32602, 1)


@pytest.mark.parametrize("params", [None, "null", "{}", "[]", "[ ]", '{"extra": [1, 2]}'])
def test_empty_params_forms(params):
    member = "" if params is None else f',"params":{params}'
    body = '{"jsonrpc":"2.0","id":1,"method":"ping"%s}' % member
    out = receive(body)
    assert isinstance(out, Request) and out.params == EmptyParams()


@pytest.mark.parametrize("params", [[1], ["x"], [{}], "x", 5, True])
def test_bad_params_shapes_for_empty_params(params):
    assert_error(reply(req("ping", params)), -32602, 1)


@pytest.mark.parametrize("params", [[], ["s", "print(1)"], "s", 3])
def test_positional_or_scalar_params_for_methods_with_fields(params):
    err = assert_error(reply(req("session/eval", params)), -32602, 1)
    assert err["data"].startswith("Expected `object`, got ")


def test_positional_empty_array_for_method_with_only_optional_fields_is_refused():
    assert_error(reply(req("session/create", [])), -32602, 1)


def test_camel_case_names_and_unknown_fields_ignored():
    params = {"session": "s", "code": "1", "allowStdin": True, "collectOutput": False, "x-extra": 1}
    out = receive(req("session/eval", params))
    assert isinstance(out, Request)
    assert out.params == EvalParams(session="s", code="1", allow_stdin=True, collect_output=False)
    bad = {"session": "s", "code": "1", "allowStdin": 1}
    err = assert_error(reply(req("session/eval", bad)), -32602, 1)
    assert err["data"] == "Expected `bool`, got `int` - at `$.allowStdin`"


def test_every_method_in_the_table_is_dispatched():
    dispatcher = Dispatcher()
    for method, (params_type, _result) in METHODS.items():
        params = msgspec.json.encode(_minimal(params_type))
        body = b'{"jsonrpc":"2.0","id":1,"method":"%b","params":%b}' % (method.encode(), params)
        out = dispatcher.receive(body)
        assert isinstance(out, Request) and isinstance(out.params, params_type), method


def _minimal(params_type: type) -> dict:
    # The smallest valid params object: every required field with a value of its type.
    values = {
        "session": "s", "code": "x", "cursor": 0, "name": "python", "request_id": 1, "text": "", "path": "f",
    }
    info = msgspec.inspect.type_info(params_type)
    return {f.encode_name: values[f.name] for f in info.fields if f.required}


# ---------------------------------------------------------------------------------------------
# Notifications and responses


def test_valid_notifications():
    assert receive(note("initialized")) == Notification("initialized", EmptyParams())
    assert receive(note("notifications/initialized", {})) == Notification(
        "notifications/initialized", EmptyParams()
    )
    assert receive(note("$/cancelRequest", {"id": HUGE})) == Notification(
        "$/cancelRequest", CancelRequestParams(id=HUGE)
    )
    out = receive(note("notifications/cancelled", {"requestId": "r1", "reason": "user"}))
    assert isinstance(out, Notification) and out.params.request_id == "r1"


@pytest.mark.parametrize(
    "message",
    [
        note("$/setTrace", {"value": "off"}),  # unknown $/ notification
        note("$/progress"),
        note("no/such/notification"),
        note("ping"),  # a request-only method sent as a notification
        note("session/eval", {"session": "s", "code": "1"}),
        note("$/cancelRequest", {"id": 1.5}),  # invalid params: still no reply
        note("$/cancelRequest"),
        note("notifications/cancelled", [1, 2]),
        {"jsonrpc": "2.0", "id": 5, "result": {"ok": True}},  # a client's response
        {"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "no"}},
        {"jsonrpc": "2.0", "id": None, "result": None},
    ],
)
def test_nothing_is_sent(message):
    assert receive(message) is None


# ---------------------------------------------------------------------------------------------
# Batches


def test_empty_batch_is_one_invalid_request_error():
    out = receive(b" [ ] ")
    assert isinstance(out, bytes)
    assert_error(json.loads(out), -32600)


def test_mixed_batch_keeps_order_and_answers_invalid_elements():
    out = receive([
        req("ping", id=1), note("initialized"), 5, req("nope", id="b"), note("$/x"), [],
        req("session/eval", {"code": 1}, id=2), {"jsonrpc": "2.0", "id": 9, "result": 1},
    ])
    assert isinstance(out, Batch)
    kinds = [type(item).__name__ for item in out.items]
    assert kinds == ["Request", "Notification", "bytes", "bytes", "bytes", "bytes"]
    assert out.items[0].raw_id == b"1"
    assert_error(json.loads(out.items[2]), -32600)
    assert_error(json.loads(out.items[3]), -32601, "b")
    assert_error(json.loads(out.items[4]), -32600)  # a nested array is not a request
    assert_error(json.loads(out.items[5]), -32602, 2)


def test_batch_of_notifications_only_is_handled_and_never_answered():
    out = receive([note("initialized"), note("$/cancelRequest", {"id": 1})])
    assert isinstance(out, Batch)
    assert all(isinstance(item, Notification) for item in out.items)


def test_batch_of_ignored_messages_only_gives_nothing():
    response = {"jsonrpc": "2.0", "id": 1, "result": 0}
    assert receive([note("$/x"), note("initialized", [1]), response]) is None


def test_batch_with_invalid_utf8_or_bad_json_is_one_parse_error():
    assert_error(reply(b'[{"jsonrpc":"2.0","id":1,"method":"ping"},\xff]'), -32700)
    assert_error(reply(b'[{"jsonrpc":"2.0","id":1,"method":"ping"},'), -32700)


# ---------------------------------------------------------------------------------------------
# Registration


def test_register_adds_methods_to_one_dispatcher_only():
    class EchoParams(Params):
        text_value: str

    dispatcher = Dispatcher()
    dispatcher.register("test/echo", EchoParams)
    dispatcher.register("test/poke", EchoParams, notification=True)
    out = receive(req("test/echo", {"textValue": "hi"}), dispatcher)
    assert isinstance(out, Request) and out.params == EchoParams(text_value="hi")
    out = receive(note("test/poke", {"textValue": "x"}), dispatcher)
    assert out == Notification("test/poke", EchoParams(text_value="x"))
    assert_error(json.loads(receive(req("test/echo", {"textValue": 1}), dispatcher)), -32602, 1)
    assert_error(reply(req("test/echo", {"textValue": "hi"})), -32601, 1)


def test_custom_tables():
    dispatcher = Dispatcher(methods={"only": (EmptyParams, None)}, notifications={})
    assert isinstance(receive(req("only"), dispatcher), Request)
    assert json.loads(receive(req("ping"), dispatcher))["error"]["code"] == -32601
    assert receive(note("initialized"), dispatcher) is None


# ---------------------------------------------------------------------------------------------
# Encoding


def test_encode_result_with_struct_dict_and_null():
    body = encode_result(b'"x"', EvalResult(status="ok", execution_count=1, stdout="a\nb"))
    assert b"\n" not in body
    out = json.loads(body)
    assert out["id"] == "x" and out["result"]["status"] == "ok"
    assert out["result"]["stdout"] == "a\nb"
    assert out["result"]["executionCount"] == 1 and out["result"]["stateLost"] is False
    out = json.loads(encode_result(b"null", None))
    assert out == {"jsonrpc": "2.0", "id": None, "result": None}
    out = json.loads(encode_result(b"3", {"a": [1]}))
    assert out == {"jsonrpc": "2.0", "id": 3, "result": {"a": [1]}}


def test_encode_result_raises_on_unencodable_result():
    with pytest.raises(TypeError):
        encode_result(b"1", object())


def test_encode_error_omits_data_when_none():
    assert json.loads(encode_error(b"1", SessionNotFound())) == {
        "jsonrpc": "2.0", "id": 1, "error": {"code": -32010, "message": "Session not found"}}
    out = json.loads(encode_error(None, InvalidParams(data="at `$.x`")))
    assert out == {"jsonrpc": "2.0", "id": None,
                   "error": {"code": -32602, "message": "Invalid params", "data": "at `$.x`"}}


def test_encode_error_never_raises_on_bad_data():
    out = json.loads(encode_error(b"1", InternalError("boom", data=object())))
    assert out["error"]["message"] == "boom" and out["error"]["data"].startswith("<object")


def test_encode_notification():
    body = encode_notification("session/output", {"session": "s", "text": "line\n"})
    assert b"\n" not in body
    assert json.loads(body) == {"jsonrpc": "2.0", "method": "session/output",
                                "params": {"session": "s", "text": "line\n"}}


def test_encode_batch():
    bodies = [encode_result(b"1", {}), encode_error(None, InvalidParams())]
    assert json.loads(encode_batch(bodies)) == [json.loads(b) for b in bodies]
    with pytest.raises(ValueError):
        encode_batch([])


# ---------------------------------------------------------------------------------------------
# Never raises


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0"]) | json_values,
        "id": st.integers() | st.text(max_size=5) | st.none() | json_values,
        "method": st.sampled_from([*METHODS, "initialized", "$/cancelRequest", "$/x"])
        | json_values,
        "params": json_values,
        "result": json_values,
    },
)


@given(envelopes | st.lists(envelopes, max_size=4) | json_values)
def test_any_json_never_raises(message):
    out = Dispatcher().receive(json.dumps(message).encode())
    assert out is None or isinstance(out, (Request, Notification, Batch, bytes))
    if isinstance(out, bytes):
        assert json.loads(out)["jsonrpc"] == "2.0"


@given(st.binary(max_size=200))
def test_any_bytes_never_raise(body):
    out = Dispatcher().receive(body)
    assert out is None or isinstance(out, (Request, Notification, Batch, bytes))


# ---------------------------------------------------------------------------------------------
# Errors


def test_error_table_matches_protocol():
    assert {code: cls.__name__ for code, cls in ERRORS_BY_CODE.items()} == {
        -32700: "ParseError", -32600: "InvalidRequest", -32601: "MethodNotFound",
        -32602: "InvalidParams", -32603: "InternalError", -32800: "RequestCancelled",
        -32010: "SessionNotFound", -32011: "SessionLimit", -32012: "SessionStartFailed",
        -32013: "ShuttingDown",
    }
    for code, cls in ERRORS_BY_CODE.items():
        assert issubclass(cls, CellboxError) and cls.code == code
        assert cls.__doc__ and "\n" not in cls.__doc__.strip()
        assert getattr(errors, cls.__name__) is cls


def test_error_attributes():
    err = errors.SessionStartFailed(data="no such interpreter")
    assert isinstance(err, Exception)
    assert (err.code, err.data) == (-32012, "no such interpreter")
    assert err.message == "Session start failed"
    assert str(err) == "Session start failed"
    err = errors.ShuttingDown("bye")
    assert (err.message, err.data) == ("bye", None)
    with pytest.raises(CellboxError):
        raise errors.MethodNotFound()


# ---------------------------------------------------------------------------------------------
# Schema: generated from the same tables the dispatcher decodes with


def test_schema_covers_every_method_and_resolves():
    from cellbox.protocol.messages import NOTIFICATIONS, SERVER_NOTIFICATIONS
    from cellbox.protocol.schema import schema

    doc = schema()
    text = json.dumps(doc, indent=2)  # what `cellbox schema` prints
    assert json.loads(text) == doc
    assert list(doc["methods"]) == list(METHODS)
    assert list(doc["notifications"]) == list(NOTIFICATIONS)
    assert list(doc["serverNotifications"]) == list(SERVER_NOTIFICATIONS)
    assert [e["code"] for e in doc["errors"]] == list(ERRORS_BY_CODE)
    for ref in _refs(doc):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in doc["$defs"]
    eval_params = doc["$defs"]["EvalParams"]
    assert eval_params["required"] == ["session", "code"]
    assert "allowStdin" in eval_params["properties"]
    assert doc["methods"]["session/close"]["result"] == {"type": "null"}
    assert {"type": "array", "maxItems": 0} in doc["methods"]["ping"]["params"]["anyOf"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
