"""Requests and cells that try to break the supervisor's bookkeeping, through the real server.

Each test is a way a client or a cell broke a promise when the rebuilt supervisor was attacked
on purpose: restarts and closes racing each other and a create, a late ``session/input``, a
cell that forks and lets the copy run on, a client that stops reading while displays and
replies keep coming, and the descendants of a replaced child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from cellbox.supervisor import process
from tests.harness import RpcError, poll_until


def _line(i: int, method: str, params: dict) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n"


@pytest.mark.timeout(60)
def test_two_restarts_in_one_write_both_succeed(server):
    sid = server.create()
    server.eval(sid, "x = 1")
    server.write(_line(1, "session/restart", {"session": sid}) + _line(2, "session/restart", {"session": sid}))
    first, second = server.reply(1, 30), server.reply(2, 30)
    assert "result" in first and "result" in second, (first, second)
    # Both name the child that serves the session now: the second restart satisfied the first.
    assert first["result"]["pid"] == second["result"]["pid"]
    r = server.eval(sid, "'x' in globals()")
    assert r["value"]["repr"] == "False" and r["executionCount"] == 1


@pytest.mark.timeout(60)
def test_restart_then_close_in_one_write(server):
    sid = server.create()
    server.write(_line(1, "session/restart", {"session": sid}) + _line(2, "session/close", {"session": sid}))
    restart, close = server.reply(1, 30), server.reply(2, 30)
    assert close == {"jsonrpc": "2.0", "id": 2, "result": None}
    assert restart["error"]["code"] == -32010, restart  # the session it restarted is gone
    assert server.call("session/list")["sessions"] == []


@pytest.mark.timeout(60)
def test_a_close_during_create_answers_both_and_keeps_the_counts(make_server):
    server = make_server("--no-zygote", "--warm", "0")  # a fresh interpreter: create is slow
    server.write(_line(1, "session/create", {"name": "doomed"}))
    listed = poll_until(lambda: server.call("session/list")["sessions"], 20, 0.005)
    server.write(_line(2, "session/close", {"session": listed[0]["session"]}))
    create, close = server.reply(1, 30), server.reply(2, 30)
    assert close["result"] is None, close
    assert create["error"]["code"] == -32010, create  # closed as it started: not a shutdown
    stats = server.call("server/stats")
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["created"] == stats["sessions"]["closed"], stats["sessions"]
    assert server.call("ping") == {}  # the server goes on


@pytest.mark.timeout(60)
def test_a_late_input_reply_never_answers_the_next_prompt(server):
    sid = server.create()
    rid = server.send("session/eval", {"session": sid, "code": "a = input('one'); b = input('two'); a + b",
                                       "allowStdin": True})

    def prompt(n):
        return server.wait_for(lambda: [p["params"] for p in server.notifications
                                        if p.get("method") == "session/inputRequest"
                                        and p["params"]["requestId"] == rid][n:n + 1], 20)[0]

    first = prompt(0)
    assert (first["prompt"], first["promptId"]) == ("one", 1)
    reply = {"session": sid, "requestId": rid, "text": "x", "promptId": 1}
    server.write(_line(1, "session/input", reply) + _line(2, "session/input", reply))  # a duplicate
    assert server.reply(1)["result"] is None
    second = prompt(1)
    assert (second["prompt"], second["promptId"]) == ("two", 2)
    late = server.reply(2)  # whenever it arrived, it named prompt 1
    assert late["error"]["code"] == -32602, late
    server.call("session/input", {"session": sid, "requestId": rid, "text": "y", "promptId": 2})
    assert server.reply(rid, 20)["result"]["value"]["repr"] == "'xy'"


@pytest.mark.timeout(60)
def test_a_cell_that_forks_does_not_split_the_session(server):
    """The copy made by ``os.fork()`` runs the rest of the cell and ends there; it never reads
    the session's requests nor answers them."""
    sid = server.create()
    r = server.eval(sid, "import os\npid = os.fork()\nprint('copy' if pid == 0 else 'original')\npid")
    assert r["status"] == "ok" and r["value"]["repr"] != "0", r
    for i in range(50):
        assert server.eval(sid, f"{i} + 1")["value"]["repr"] == str(i + 1)
    assert server.eval(sid, "os.waitpid(pid, 0)[1]")["value"]["repr"] == "0"  # it exited 0
    assert server.eval(sid, "os.path.exists(f'/proc/{pid}')")["value"]["repr"] == "False"


@pytest.mark.timeout(60)
def test_a_cell_that_forks_while_awaiting_does_not_split_the_session(server):
    sid = server.create()
    r = server.eval(sid, "import asyncio, os\npid = os.fork()\nawait asyncio.sleep(0.05)\npid")
    assert r["status"] == "ok" and r["value"]["repr"] != "0", r
    for i in range(20):
        assert server.eval(sid, f"{i} * 3")["value"]["repr"] == str(i * 3)
    assert server.eval(sid, "os.waitpid(pid, 0)[1]")["value"]["repr"] == "0"


def _flood_while_not_reading(server, start, settle: float = 3.0) -> tuple[int, int]:
    """Stop reading, call ``start()``, and return the server's RSS (KiB) before and at its
    peak over ``settle`` s."""
    base = server.rss_kib()
    server.reading.clear()
    start()
    peak = base
    tick = threading.Event()
    for _ in range(int(settle / 0.1)):
        tick.wait(0.1)
        peak = max(peak, server.rss_kib())
    server.reading.set()
    return base, peak


@pytest.mark.timeout(90)
def test_background_displays_are_not_queued_without_bound_when_the_client_stops_reading(make_server):
    server = make_server("--output-bytes", "100000000")
    flood, quiet = server.create(), server.create()
    code = ("import asyncio\nasync def spam():\n    while True:\n"
            "        display({'text/plain': 'x' * 100_000}, raw=True)\n        await asyncio.sleep(0)\n"
            "task = asyncio.ensure_future(spam())")
    base, peak = _flood_while_not_reading(server, lambda: server.send("session/eval", {"session": flood, "code": code}))
    assert peak - base < 40 * 1024, (base, peak)
    assert server.eval(quiet, "6 * 7", 30)["value"]["repr"] == "42"
    assert server.eval(flood, "task.cancel()", 30)["status"] == "ok"


@pytest.mark.timeout(120)
def test_replies_are_not_queued_without_bound_when_the_client_stops_reading(make_server):
    """A client that keeps sending evals whose replies are big but never reads them: the
    server stops reading its requests (the client's writes block) instead of growing."""
    server = make_server()
    sid = server.create()
    count = 3000
    body = "".join(_line(i, "session/eval", {"session": sid, "code": "'x' * 50_000"}) for i in range(count))
    writer = threading.Thread(target=server.write, args=(body,), daemon=True)
    base, peak = _flood_while_not_reading(server, writer.start)
    assert peak - base < 40 * 1024, (base, peak)  # 150 MB of replies were asked for
    writer.join(60)
    assert not writer.is_alive()
    last = server.reply(count - 1, 60)
    assert len(last["result"]["value"]["repr"]) == 50_002
    assert all(i in server.replies for i in [("int", i) for i in range(count)]), "a reply is missing"


@pytest.mark.timeout(30)
def test_orphans_are_told_apart_by_the_child_that_left_them():
    """``orphans`` finds the processes a child left by its own marker, not by its session's:
    a replaced child's late exit must not kill what the session's new child started."""
    sid = "0123456789ab"
    mine, theirs = process.child_marker(sid), process.child_marker(sid)
    assert mine != theirs and mine.startswith(sid)
    name = process.process_name(sid)
    prog = "import sys, time\nif len(sys.argv) > 1:\n    open('/proc/self/comm', 'w').write(sys.argv[1])\ntime.sleep(60)"
    procs = {
        "mine": subprocess.Popen([sys.executable, "-c", prog], env={process.MARKER: mine}),
        "theirs": subprocess.Popen([sys.executable, "-c", prog, name], env={process.MARKER: theirs}),
        "emptied": subprocess.Popen([sys.executable, "-c", prog, name], env={}),
        "stranger": subprocess.Popen([sys.executable, "-c", prog], env={}),
    }
    try:
        pids = {k: p.pid for k, p in procs.items()}
        poll_until(lambda: all(open(f"/proc/{p}/comm").read().strip() == name
                               for p in (pids["theirs"], pids["emptied"])), 10)
        found = set(process.orphans(mine, known=()))
        assert found & set(pids.values()) == {pids["mine"], pids["emptied"]}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_an_input_reply_for_no_prompt_is_refused(server):
    sid = server.create()
    with pytest.raises(RpcError) as info:
        server.call("session/input", {"session": sid, "requestId": 5, "text": "x", "promptId": 1})
    assert info.value.code == -32602
