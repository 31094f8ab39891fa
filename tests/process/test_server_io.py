"""The server's I/O edges: end of input with requests in flight, a blocked signal mask, a
stuck zygote. Real ``cellbox serve`` processes over real pipes."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.harness import Server, _comm, _k

ZYGOTE_MODES = [pytest.param((), id="zygote"), pytest.param(("--no-zygote",), id="no-zygote")]


def _request(id: Any, method: str, params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}) + "\n"


def _finish(server: Server, ids: list[Any], deadline: float = 20.0) -> dict[Any, dict[str, Any]]:
    """Close stdin, wait for the exit (code 0), and return the one reply of each id."""
    start = time.monotonic()
    code = server.close(timeout=deadline)
    assert code == 0, server.stderr_text()[-3000:]
    assert time.monotonic() - start < deadline
    server.wait_for(lambda: all(_k(i) in server.replies for i in ids), timeout=5)
    with server._lock:
        answers = [m for m in server.raw if isinstance(m, dict) and "id" in m]
    for i in ids:
        assert sum(1 for m in answers if m["id"] == i and type(m["id"]) is type(i)) == 1, (i, answers)
    server.assert_no_leftovers()
    return {i: server.replies[_k(i)] for i in ids}


@pytest.mark.parametrize("mode", ZYGOTE_MODES)
def test_eof_answers_a_create_in_flight(mode):
    server = Server(*mode)
    server.write(_request(1, "session/create", {}))
    replies = _finish(server, [1])
    assert "result" in replies[1] or replies[1]["error"]["code"] == -32013


@pytest.mark.parametrize("mode", ZYGOTE_MODES)
def test_eof_answers_several_creates(mode):
    server = Server(*mode)
    server.write("".join(_request(i, "session/create", {}) for i in (1, 2, 3)))
    _finish(server, [1, 2, 3])


@pytest.mark.parametrize("mode", ZYGOTE_MODES)
def test_eof_answers_evals_and_a_create(mode):
    server = Server(*mode)
    sid = server.create()
    server.write(
        _request(1, "session/eval", {"session": sid, "code": "print('in', flush=True); import time; time.sleep(30)"})
        + _request(2, "session/eval", {"session": sid, "code": "1"})
        + _request(3, "session/create", {})
    )
    server.wait_for(lambda: "in" in server.outputs(1), timeout=20)
    replies = _finish(server, [1, 2, 3])
    for i in (1, 2):
        result = replies[i]["result"]
        assert (result["status"], result["cause"], result["stateLost"]) == ("killed", "closed", True)


def test_sigterm_answers_a_running_eval():
    server = Server()
    sid = server.create()
    server.write(_request(1, "session/eval", {"session": sid, "code": "print('in', flush=True)\nwhile True: pass"}))
    server.wait_for(lambda: "in" in server.outputs(1), timeout=20)
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(20) == 0
    result = server.reply(1, timeout=5)["result"]
    assert (result["status"], result["cause"]) == ("killed", "closed")
    server.assert_no_leftovers()


def _sigblk(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.parametrize("mode", ZYGOTE_MODES)
def test_a_parent_blocking_sigint_does_not_turn_interrupts_into_kills(mode):
    # The mask is per thread and inherited through fork/exec: block SIGINT while this thread
    # starts the server, as a parent that blocks it would.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server = Server("--kill-grace", "5", *mode)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    try:
        sid = server.create()
        assert _sigblk(server.proc.pid) == 0
        rid = server.send("session/eval", {"session": sid, "code": "print('in', flush=True)\nimport time\ntime.sleep(30)"})
        server.wait_for(lambda: "in" in server.outputs(rid), timeout=20)
        start = time.monotonic()
        server.call("session/interrupt", {"session": sid})
        result = server.reply(rid, timeout=10)["result"]
        assert (result["status"], result["stateLost"]) == ("interrupted", False), result
        assert time.monotonic() - start < 2.5  # well under the 5 s kill grace
    finally:
        assert server.close() == 0
        server.assert_no_leftovers()


def _zygotes(server: Server) -> list[int]:
    """Live ``cellbox-zygote`` processes among the server's children."""
    out = []
    for tid in os.listdir(f"/proc/{server.proc.pid}/task"):
        with open(f"/proc/{server.proc.pid}/task/{tid}/children") as f:
            out += [int(p) for p in f.read().split() if _comm(p) == "cellbox-zygote"]
    return out


def _poll(predicate, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)  # polling /proc under a deadline; there is no event to wait on


def test_a_stopped_zygote_is_replaced_and_creates_stay_fast():
    server = Server("--warm", "0")
    try:
        first = server.create()
        (old,) = _poll(lambda: _zygotes(server), 10)
        os.kill(old, signal.SIGSTOP)
        for _ in range(3):
            start = time.monotonic()
            sid = server.create()
            assert time.monotonic() - start < 2.5, server.stderr_text()[-2000:]
            assert server.eval(sid, "6 * 7")["value"]["repr"] == "42"
        (new,) = _poll(lambda: [p for p in _zygotes(server) if p != old], 10)
        # The replacement serves: a child it forks has the server as parent and runs cells.
        sid = server.create()
        assert server.adopter(sid) == server.proc.pid
        assert server.eval(sid, "6 * 7")["value"]["repr"] == "42"
        assert server.eval(first, "1 + 1")["value"]["repr"] == "2"
        assert old not in _zygotes(server)
    finally:
        assert server.close() == 0
        server.assert_no_leftovers()
