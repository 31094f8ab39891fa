"""Bad client input never crashes the server or loses a session's state."""

import pytest

from tests.harness import RpcError


@pytest.mark.parametrize(
    "params, code",
    [
        ({"session": 1, "code": "1"}, -32602),
        ({"code": "1"}, -32602),
        ({"session": "nope", "code": 1}, -32602),
        ({"session": "nope", "code": "1"}, -32010),
        ({"session": "nope", "code": "1", "timeout": -1}, -32602),
    ],
)
def test_eval_params(server, params, code):
    sid = server.create()
    server.eval(sid, "keep = 1")
    with pytest.raises(RpcError) as exc:
        server.call("session/eval", params)
    assert exc.value.code == code
    assert server.eval(sid, "keep")["value"]["repr"] == "1"


def test_garbage_then_still_serving(server):
    sid = server.create()
    server.eval(sid, "keep = 2")
    server.write(b"this is not json\n")
    server.write(b"\xff\xfe\n")
    server.write(b'{"jsonrpc": "2.0", "id": 5, "method": "nope"}\n')
    assert server.reply(5)["error"]["code"] == -32601
    assert server.eval(sid, "keep")["value"]["repr"] == "2"


def test_flood_of_requests(server):
    sid = server.create()
    ids = [server.send("ping") for _ in range(500)]
    ids += [server.send("session/eval", {"session": sid, "code": f"{i}"}) for i in range(200)]
    for i in ids:
        server.reply(i, timeout=60)
    assert server.eval(sid, "_")["value"]["repr"] == "199"


def test_input_for_unknown_request(server):
    sid = server.create()
    with pytest.raises(RpcError) as exc:
        server.call("session/input", {"session": sid, "requestId": 12345, "text": "x"})
    assert exc.value.code == -32602
