"""The client's sans-IO core (``cellbox.client.connection``): bytes in, events out, no I/O.

Cases are data: what the client sent, what the server answered, the events that must come
out. A property test then feeds random interleavings of replies and notifications, in random
chunks, with cancellations and a connection loss at random points.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellbox.client.connection import (
    CallFailed,
    ClientConnection,
    EvalEvent,
    Ignored,
    Notification,
    Reply,
    ServerGone,
)
from cellbox.protocol import messages as m
from cellbox.protocol.errors import ERRORS_BY_CODE, CellboxError, SessionNotFound


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def reply(request_id: Any, result: Any = None) -> bytes:
    return line({"jsonrpc": "2.0", "id": request_id, "result": result})


def error(request_id: Any, code: int, message: str = "no", data: Any = None) -> bytes:
    obj: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        obj["data"] = data
    return line({"jsonrpc": "2.0", "id": request_id, "error": obj})


def output(request_id: Any, text: str, session: str = "s1") -> bytes:
    params = {"session": session, "requestId": request_id, "stream": "stdout", "text": text}
    return line({"jsonrpc": "2.0", "method": "session/output", "params": params})


def display(request_id: Any) -> bytes:
    params = {"session": "s1", "requestId": request_id, "data": {"text/plain": "x"}}
    return line({"jsonrpc": "2.0", "method": "session/display", "params": params})


def input_request(request_id: Any) -> bytes:
    params = {"session": "s1", "requestId": request_id, "prompt": "? "}
    return line({"jsonrpc": "2.0", "method": "session/inputRequest", "params": params})


EVAL_RESULT = {"status": "ok", "executionCount": 1}


# ---------------------------------------------------------------------------------------------
# Requests out


def test_ids_count_from_one_and_requests_are_framed():
    conn = ClientConnection()
    assert conn.send_request("ping") == (1, b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
    rid, data = conn.send_request("session/close", m.SessionParams(session="s1"))
    assert rid == 2
    assert json.loads(data) == {"jsonrpc": "2.0", "id": 2, "method": "session/close", "params": {"session": "s1"}}
    assert conn.pending == {1, 2}


def test_lsp_framing_both_ways():
    conn = ClientConnection("lsp")
    rid, data = conn.send_request("ping")
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    assert data == b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    answer = b'{"jsonrpc":"2.0","id":1,"result":null}'
    framed = b"Content-Length: %d\r\n\r\n%b" % (len(answer), answer)
    assert conn.receive_data(framed[:10]) == []
    assert conn.receive_data(framed[10:]) == [Reply(rid, None)]


def test_unknown_framing_is_refused():
    with pytest.raises(ValueError):
        ClientConnection("xml")


def test_notifications_are_not_recorded():
    conn = ClientConnection()
    assert json.loads(conn.send_notification("$/cancelRequest", {"id": 7})) == {
        "jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 7}
    }
    assert conn.pending == frozenset()


# ---------------------------------------------------------------------------------------------
# Replies in


def test_out_of_order_replies_reach_their_calls_decoded_by_their_types():
    conn = ClientConnection()
    a, _ = conn.send_request("session/create", result_type=m.SessionCreateResult)
    b, _ = conn.send_request("session/interrupt", result_type=m.SessionInterruptResult)
    c, _ = conn.send_request("ping")
    events = conn.receive_data(
        reply(c) + reply(a, {"session": "s1", "pid": 12, "python": "3.11"}) + reply(b, {"interrupted": True})
    )
    assert events == [
        Reply(c, None),
        Reply(a, m.SessionCreateResult(session="s1", pid=12, python="3.11")),
        Reply(b, m.SessionInterruptResult(interrupted=True)),
    ]
    assert conn.pending == frozenset()


def test_bytes_in_any_chunks_give_the_same_events():
    conn = ClientConnection()
    rid, _ = conn.send_request("session/eval", result_type=m.EvalResult, stream=True)
    data = output(rid, "a") + output(rid, "b") + reply(rid, EVAL_RESULT)
    events = [e for i in range(len(data)) for e in conn.receive_data(data[i : i + 1])]
    assert [type(e) for e in events] == [EvalEvent, EvalEvent, Reply]
    assert [e.event.text for e in events[:2]] == ["a", "b"]


def test_end_of_input_completes_an_unterminated_last_message():
    conn = ClientConnection()
    rid, _ = conn.send_request("ping")
    assert conn.receive_data(reply(rid).rstrip(b"\n")) == []
    assert conn.receive_data(b"") == [Reply(rid, None)]


def test_a_reply_nobody_waits_for_is_dropped():
    conn = ClientConnection()
    conn.send_request("ping")
    assert conn.receive_data(reply(5) + reply("1") + reply(None) + error(9, -32010)) == []
    assert conn.pending == {1}


@pytest.mark.parametrize("code, cls", sorted(ERRORS_BY_CODE.items()))
def test_error_replies_raise_the_class_of_their_code(code, cls):
    conn = ClientConnection()
    rid, _ = conn.send_request("session/close")
    (event,) = conn.receive_data(error(rid, code, "bad", {"why": 1}))
    match event:
        case CallFailed(request_id=got, error=exc):
            assert got == rid and type(exc) is cls
            assert exc.code == code and exc.message == "bad" and exc.data == {"why": 1}
        case _:
            pytest.fail(f"not a failure: {event!r}")


def test_an_error_of_an_unknown_code_is_the_root_with_that_code():
    conn = ClientConnection()
    rid, _ = conn.send_request("x/y")
    (event,) = conn.receive_data(error(rid, -31999, "odd"))
    assert isinstance(event, CallFailed) and type(event.error) is CellboxError
    assert event.error.code == -31999 and event.error.message == "odd"


def test_a_result_of_the_wrong_shape_fails_the_call():
    conn = ClientConnection()
    rid, _ = conn.send_request("session/create", result_type=m.SessionCreateResult)
    (event,) = conn.receive_data(reply(rid, {"session": 3}))
    assert isinstance(event, CallFailed) and type(event.error) is CellboxError
    assert "unexpected result for `session/create`" in event.error.message


# ---------------------------------------------------------------------------------------------
# Notifications in


def test_eval_events_are_routed_by_request_id():
    conn = ClientConnection()
    a, _ = conn.send_request("session/eval", result_type=m.EvalResult, stream=True)
    b, _ = conn.send_request("session/eval", result_type=m.EvalResult, stream=True)
    events = conn.receive_data(output(b, "to b") + display(a) + input_request(b) + output(a, "to a"))
    assert [(type(e), e.request_id, type(e.event)) for e in events] == [
        (EvalEvent, b, m.OutputNotification),
        (EvalEvent, a, m.DisplayNotification),
        (EvalEvent, b, m.InputRequestNotification),
        (EvalEvent, a, m.OutputNotification),
    ]
    assert all(e.event.request_id == e.request_id for e in events)


@pytest.mark.parametrize(
    "request_id, why",
    [
        (99, "no call has that id"),
        ("1", "a string id is not the client's integer 1"),
        (2, "a call that does not stream (not an eval)"),
        (3, "an eval that has ended"),
    ],
)
def test_eval_events_for_no_running_eval_are_general_notifications(request_id, why):
    conn = ClientConnection()
    conn.send_request("session/eval", result_type=m.EvalResult, stream=True)  # 1, running
    conn.send_request("session/eval", result_type=m.EvalResult)  # 2: a plain call
    conn.send_request("session/eval", result_type=m.EvalResult, stream=True)  # 3
    assert [type(e) for e in conn.receive_data(reply(3, EVAL_RESULT))] == [Reply]
    (event,) = conn.receive_data(output(request_id, "late"))
    assert isinstance(event, Notification), why
    assert event.method == "session/output" and event.params == m.OutputNotification(
        session="s1", request_id=request_id, stream="stdout", text="late"
    )


def test_unknown_notifications_carry_plain_json():
    conn = ClientConnection()
    data = line({"jsonrpc": "2.0", "method": "$/progress", "params": {"n": [1, 2]}})
    data += line({"jsonrpc": "2.0", "method": "x/none"})
    assert conn.receive_data(data) == [Notification("$/progress", {"n": [1, 2]}), Notification("x/none", None)]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"not json\n", "undecodable message"),
        (b"[1, 2]\n", "undecodable message"),
        (error(None, -32700, "Parse error"), "the server rejected a message"),
        (line({"jsonrpc": "2.0", "method": "session/output", "params": {"text": 1}}), "bad session/output notification"),
    ],
)
def test_bad_input_is_reported_as_data(data, reason):
    conn = ClientConnection()
    rid, _ = conn.send_request("ping")
    (event,) = conn.receive_data(data)
    assert isinstance(event, Ignored) and event.reason.startswith(reason), event
    assert conn.receive_data(reply(rid)) == [Reply(rid, None)]  # still usable


def test_a_bad_lsp_frame_is_reported():
    conn = ClientConnection("lsp")
    (event,) = conn.receive_data(b"Content-Type: x\r\n\r\n{}")
    assert isinstance(event, Ignored) and event.reason.startswith("bad frame from the server")


# ---------------------------------------------------------------------------------------------
# Cancellation and the end of the connection


def test_cancel_asks_the_server_to_stop_and_drops_the_late_reply():
    conn = ClientConnection()
    rid, _ = conn.send_request("session/eval", result_type=m.EvalResult, stream=True)
    assert json.loads(conn.cancel(rid)) == {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": rid}}
    assert conn.cancel(rid) is None  # only once
    assert conn.receive_data(reply(rid, EVAL_RESULT)) == []
    assert conn.connection_lost("gone") == []


def test_cancel_after_the_reply_or_the_loss_sends_nothing():
    conn = ClientConnection()
    a, _ = conn.send_request("ping")
    b, _ = conn.send_request("ping")
    conn.receive_data(reply(a))
    assert conn.cancel(a) is None
    conn.connection_lost("gone")
    assert conn.cancel(b) is None


def test_connection_loss_fails_every_pending_call_once():
    conn = ClientConnection()
    a, _ = conn.send_request("session/eval", result_type=m.EvalResult, stream=True)
    b, _ = conn.send_request("ping")
    c, _ = conn.send_request("session/list")
    conn.receive_data(reply(b))
    failed = conn.connection_lost("the cellbox server exited with status -9 (signal 9)", -9)
    assert [e.request_id for e in failed] == [a, c]
    for event, method in zip(failed, ["session/eval", "session/list"], strict=True):
        assert isinstance(event.error, ServerGone) and event.error.returncode == -9
        assert str(event.error) == f"the cellbox server exited with status -9 (signal 9); no reply to `{method}` can come"
    assert conn.closed and conn.pending == frozenset()
    assert conn.connection_lost("again") == []
    assert conn.receive_data(reply(a, EVAL_RESULT)) == []


def test_after_the_loss_every_send_raises_server_gone():
    conn = ClientConnection()
    conn.connection_lost("the connection to the cellbox server was closed", None)
    with pytest.raises(ServerGone, match="no reply to `ping` can come") as info:
        conn.send_request("ping")
    assert info.value.returncode is None and info.value.code == -32099
    with pytest.raises(ServerGone):
        conn.send_notification("$/cancelRequest", {"id": 1})
    assert conn.pending == frozenset()


def test_server_gone_is_a_cellbox_error():
    assert issubclass(ServerGone, CellboxError) and not issubclass(ServerGone, SessionNotFound)


# ---------------------------------------------------------------------------------------------
# Random interleavings


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[bool], list[tuple[str, Any]]]:
    """Calls (True: an eval that streams) and a script of what happens: the server's bytes
    (in random chunks, which may split messages), cancellations and one connection loss."""
    streams = draw(st.lists(st.booleans(), min_size=1, max_size=6))
    queues: list[list[bytes]] = []
    for i, stream in enumerate(streams):
        rid = i + 1
        msgs = [output(rid, f"{rid}:{k}") for k in range(draw(st.integers(0, 3)))]
        if draw(st.booleans()):
            msgs.append(reply(rid, EVAL_RESULT if stream else None))
        else:
            msgs.append(error(rid, SessionNotFound.code))
        msgs += [output(rid, f"{rid}:late")] * draw(st.integers(0, 1))
        queues.append(msgs)
    strays = [output(99, "99:x"), output("2", "s:x"), reply(42), display(77)]
    queues.append(draw(st.lists(st.sampled_from(strays), max_size=3)))
    stream_bytes = b""
    while any(queues):
        q = draw(st.sampled_from([q for q in queues if q]))
        stream_bytes += q.pop(0)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream_bytes) - 1)), max_size=8)))
    chunks = [stream_bytes[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream_bytes)], strict=True)]
    script: list[tuple[str, Any]] = [("data", c) for c in chunks if c]
    for _ in range(draw(st.integers(0, 3))):
        script.insert(draw(st.integers(0, len(script))), ("cancel", draw(st.integers(1, len(streams)))))
    if draw(st.booleans()):
        script.insert(draw(st.integers(0, len(script))), ("lose", None))
    return streams, script


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_random_interleavings_route_every_output_to_its_eval_and_end_every_call_once(case):
    streams, script = case
    conn = ClientConnection()
    for stream in streams:
        conn.send_request("session/eval" if stream else "ping", result_type=Any, stream=stream)
    calls = range(1, len(streams) + 1)
    ended: dict[int, int] = {rid: 0 for rid in calls}
    cancelled: set[int] = set()
    for action, arg in script:
        match action:
            case "cancel":
                if arg not in cancelled and not ended[arg]:
                    assert conn.cancel(arg) is not None or conn.closed
                    cancelled.add(arg)
                else:
                    assert conn.cancel(arg) is None
                events = []
            case "lose":
                events = conn.connection_lost("gone")
            case "data":
                events = conn.receive_data(arg)
        for event in events:
            match event:
                case EvalEvent(request_id=rid, event=m.OutputNotification(request_id=carried, text=text)):
                    # only to the eval the notification names, while it runs and is awaited
                    assert rid == carried and text.split(":")[0] == str(rid)
                    assert streams[rid - 1] and not ended[rid] and rid not in cancelled
                case Notification(params=m.OutputNotification(request_id=carried)):
                    running = carried in ended and streams[carried - 1] and not ended[carried]
                    assert not (running and carried not in cancelled), "output of a running eval not routed"
                case Notification(params=m.DisplayNotification(request_id=77)):
                    pass
                case Reply(request_id=rid) | CallFailed(request_id=rid):
                    assert rid not in cancelled
                    ended[rid] += 1
                    assert ended[rid] == 1, f"call {rid} ended twice"
                case _:
                    pytest.fail(f"unexpected event {event!r}")
    for event in conn.connection_lost("the end"):
        assert isinstance(event.error, ServerGone)
        ended[event.request_id] += 1
    for rid in calls:
        assert ended[rid] == (0 if rid in cancelled else 1), (rid, ended, cancelled)
    assert conn.pending == frozenset()
