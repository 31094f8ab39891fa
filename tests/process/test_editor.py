"""Editor methods through the real server (PROTOCOL.md section 7): ``session/complete``,
``session/inspect`` and ``session/isComplete`` against a live session's namespace."""

from __future__ import annotations

import importlib.util
import statistics
import time
from typing import Any

import pytest

from tests.harness import RpcError

HAVE_JEDI = importlib.util.find_spec("jedi") is not None

SNEAKY = """
import asyncio
hits = []

class Sneaky:
    '''Reading some attributes of this runs code.'''

    @property
    def prop(self):
        '''A property with a side effect.'''
        hits.append("prop")
        open(__import__("os").devnull, "w").close()
        return 1

    def __getattr__(self, name):
        hits.append("getattr " + name)
        return 5

    def method(self, alpha, beta=2, *, gamma=3):
        '''Do the method's thing.'''

sneaky = Sneaky()
data = {"alpha": 1, "alpine": 2}
def func(key1, key2=3, *, kw=4):
    '''Add things up.'''
"""


def _complete(server, sid: str, code: str, cursor: int | None = None) -> dict[str, Any]:
    return server.call("session/complete", {"session": sid, "code": code,
                                            "cursor": len(code) if cursor is None else cursor})


def _inspect(server, sid: str, code: str, cursor: int | None = None) -> dict[str, Any]:
    return server.call("session/inspect", {"session": sid, "code": code,
                                           "cursor": len(code) if cursor is None else cursor})


def _error_code(server, method: str, params: Any) -> int:
    with pytest.raises(RpcError) as info:
        server.call(method, params)
    return info.value.code


@pytest.fixture
def live(server):
    sid = server.create()
    assert server.eval(sid, SNEAKY)["status"] == "ok"
    return server, sid


def test_complete_live_names(live):
    server, sid = live
    r = _complete(server, sid, "sneaky.me")
    assert r == {"matches": ["method"], "cursorStart": 7, "cursorEnd": 9}
    r = _complete(server, sid, 'x = data["al')
    assert r["matches"] == ['"alpha"', '"alpine"'] and r["cursorStart"] == 9
    assert "sleep" in _complete(server, sid, "await asyncio.sl")["matches"]
    assert "path" in _complete(server, sid, "from os import pa")["matches"]
    assert "os" in _complete(server, sid, "import o")["matches"]
    r = _complete(server, sid, "func(ke")
    assert r["matches"][:2] == ["key1=", "key2="] and r["cursorStart"] == 5
    assert "print" in _complete(server, sid, "pri")["matches"]


def test_complete_cursor_is_in_code_points(live):
    server, sid = live
    server.eval(sid, "ünïcode_name = 1")
    code = "s = '😀é'; ünïc + 1"
    cursor = code.index(" + 1")
    r = _complete(server, sid, code, cursor)
    assert r["matches"] == ["ünïcode_name"]
    assert (r["cursorStart"], r["cursorEnd"]) == (code.index("ünïc"), cursor)


def test_inspect_live_object(live):
    server, sid = live
    r = _inspect(server, sid, "func(1, ")
    assert r["found"] is True
    text = r["data"]["text/plain"]
    assert text.splitlines()[0] == "Signature: func(key1, key2=3, *, kw=4)"
    assert "Type:      function" in text and "Add things up." in text
    assert _inspect(server, sid, "no_such_thing") == {"found": False, "data": {}}


def test_is_complete(live):
    server, sid = live
    assert server.call("session/isComplete", {"code": "if x:"}) == {"status": "incomplete", "indent": "    "}
    assert server.call("session/isComplete", {"code": "1 +", "session": sid})["status"] == "incomplete"
    assert server.call("session/isComplete", {"code": ")"}) == {"status": "invalid", "indent": ""}
    assert server.call("session/isComplete", {"code": "await f()"}) == {"status": "complete", "indent": ""}


def test_side_effects_never_run(live):
    server, sid = live
    for code in ["sneaky.", "sneaky.pr", "sneaky.prop.", "sneaky.prop.real", "sneaky.zz.", "sneaky[",
                 "func(sneaky.prop, "]:
        _complete(server, sid, code)
    for code in ["sneaky.prop", "sneaky.zz", "sneaky", "sneaky.method"]:
        _inspect(server, sid, code)
    text = _inspect(server, sid, "sneaky.prop")["data"]["text/plain"]
    assert "not evaluated" in text and "A property with a side effect." in text
    assert server.eval(sid, "hits")["value"]["repr"] == "[]"


def test_answers_fast_while_another_session_spins(server):
    busy, sid = server.create(), server.create()
    server.eval(sid, SNEAKY)
    rid = server.start(busy, "print('ready', flush=True)\nwhile True: pass")
    _complete(server, sid, "sneaky.")  # the first request loads the completer (and warms jedi)
    times: dict[str, list[float]] = {"complete": [], "inspect": [], "isComplete": []}
    for _ in range(15):
        for method, params in (("complete", {"session": sid, "code": "sneaky.me", "cursor": 9}),
                               ("inspect", {"session": sid, "code": "func", "cursor": 4}),
                               ("isComplete", {"session": sid, "code": "if x:"})):
            t0 = time.perf_counter()
            server.call(f"session/{method}", params)
            times[method].append(time.perf_counter() - t0)
    server.call("session/interrupt", {"session": busy})
    assert server.reply(rid)["result"]["status"] == "interrupted"
    for method, samples in times.items():
        median = statistics.median(samples)
        print(f"session/{method}: median {median * 1000:.2f} ms, max {max(samples) * 1000:.2f} ms")
        assert max(samples) < 1.0, (method, samples)


def test_answers_while_own_cell_awaits(live):
    server, sid = live
    rid = server.start(sid, "late_name = 1\nprint('ready', flush=True)\nawait asyncio.sleep(60)")
    assert _complete(server, sid, "late_n")["matches"] == ["late_name"]
    server.call("session/interrupt", {"session": sid})
    assert server.reply(rid)["result"]["status"] == "interrupted"


def test_jedi_is_imported_lazily(live):
    server, sid = live
    assert server.eval(sid, "import sys; 'jedi' in sys.modules")["value"]["repr"] == "False"
    _complete(server, sid, "sneaky.")


def test_fallback_when_jedi_is_switched_off(server):
    sid = server.create(env={"CELLBOX_NO_JEDI": "1"})
    server.eval(sid, SNEAKY)
    assert _complete(server, sid, "sneaky.me")["matches"] == ["method"]
    assert _complete(server, sid, "data['alp")["matches"] == ["'alpha'", "'alpine'"]
    assert "Signature: func(" in _inspect(server, sid, "func")["data"]["text/plain"]
    assert server.eval(sid, "import sys; 'jedi' in sys.modules")["value"]["repr"] == "False"


def test_unknown_session(server):
    for method in ("session/complete", "session/inspect"):
        assert _error_code(server, method, {"session": "nope", "code": "x", "cursor": 1}) == -32010
    assert _error_code(server, "session/isComplete", {"session": "nope", "code": "x"}) == -32010


@pytest.mark.parametrize(
    "params",
    [
        {"code": "x", "cursor": 1},
        {"session": "nope", "cursor": 1},
        {"session": "nope", "code": "x"},
        {"session": "nope", "code": "x", "cursor": "1"},
        {"session": "nope", "code": "x", "cursor": -1},
        {"session": "nope", "code": 3, "cursor": 0},
        ["nope", "x", 1],
    ],
)
def test_bad_params(server, params):
    # params are validated before the session is looked up: -32602 wins over -32010
    assert _error_code(server, "session/complete", params) == -32602
    assert _error_code(server, "session/inspect", params) == -32602


def test_is_complete_bad_params(server):
    assert _error_code(server, "session/isComplete", {"code": 1}) == -32602
    assert _error_code(server, "session/isComplete", {}) == -32602
