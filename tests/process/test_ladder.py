"""Interrupts, timeouts and the kill path through the real server (PROTOCOL.md section 6)."""

import os
import time

import pytest

from tests.process.test_sessions import _wait_busy


def _start(server, sid, code, ready=None, **params):
    """Send an eval; return once it runs (or once it printed ``ready``, for code that must
    reach a given line before it is interrupted)."""
    rid = server.send("session/eval", {"session": sid, "code": code, **params})
    if ready is None:
        _wait_busy(server, sid)
    else:
        server.wait_for(lambda: ready in server.outputs(rid))
    return rid


def test_interrupt_sleep_keeps_namespace_fast(server):
    sid = server.create()
    server.eval(sid, "x = 7")
    rid = _start(server, sid, "import time\ntime.sleep(60)")
    t0 = time.monotonic()
    assert server.call("session/interrupt", {"session": sid}) == {"interrupted": True}
    r = server.reply(rid)["result"]
    elapsed = time.monotonic() - t0
    assert r["status"] == "interrupted" and r["stateLost"] is False and r["cause"] == "interrupt"
    assert r["error"]["type"] == "KeyboardInterrupt"
    assert elapsed < 0.5, elapsed
    assert server.eval(sid, "x")["value"]["repr"] == "7"


def test_interrupt_awaiting_cell_cancels_it(server):
    sid = server.create()
    code = "import asyncio\ntry:\n    print('READY')\n    await asyncio.sleep(60)\nfinally:\n    cleaned = True"
    rid = _start(server, sid, code, ready="READY")
    server.call("session/interrupt", {"session": sid})
    r = server.reply(rid)["result"]
    assert r["status"] == "interrupted" and r["stateLost"] is False
    assert r["error"]["type"] in ("CancelledError", "KeyboardInterrupt")
    assert server.eval(sid, "cleaned")["value"]["repr"] == "True"


def test_interrupt_python_busy_loop(server):
    sid = server.create()
    rid = _start(server, sid, "n = 0\nprint('READY')\nwhile True:\n    n += 1", ready="READY")
    server.call("session/interrupt", {"session": sid})
    r = server.reply(rid)["result"]
    assert r["status"] == "interrupted" and r["stateLost"] is False
    assert server.eval(sid, "n >= 0")["value"]["repr"] == "True"  # the namespace survived


def test_interrupt_when_idle_is_false(server):
    sid = server.create()
    assert server.call("session/interrupt", {"session": sid}) == {"interrupted": False}


@pytest.mark.parametrize(
    "code",
    [
        "print('READY')\nsum(range(10**12))",
        "while True:\n    try:\n        print('READY')\n        while True: pass\n    except BaseException:\n        pass",
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('READY')\ntime.sleep(60)",
    ],
    ids=["c-loop", "swallow-baseexception", "sigint-ignored"],
)
def test_uncooperative_code_is_killed_after_grace(server, code):
    sid = server.create()
    server.eval(sid, "x = 1")
    rid = _start(server, sid, code, ready="READY")
    if "SIG_IGN" not in code:
        _wait_cpu(server.call("session/list")["sessions"][0]["pid"], 0.2)
    t0 = time.monotonic()
    server.call("session/interrupt", {"session": sid})
    r = server.reply(rid, timeout=10)["result"]
    assert time.monotonic() - t0 < 3.0
    assert r["status"] == "killed" and r["stateLost"] is True and r["cause"] == "interrupt"
    r = server.eval(sid, "x")
    assert r["status"] == "error" and r["error"]["type"] == "NameError"
    stats = server.call("server/stats")
    assert stats["kills"]["interrupt"] == 1 and stats["childrenRespawned"] == 1


def _cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_cpu(pid, seconds, timeout=10.0):
    """Poll the child's CPU time until it has spent ``seconds`` more: it is in the hot loop."""
    start = _cpu(pid)
    deadline = time.monotonic() + timeout
    while _cpu(pid) - start < seconds:
        assert time.monotonic() < deadline, "the child never got busy"


def test_timeout_c_loop_is_killed_within_bound(make_server):
    s = make_server("--timeout", "1", "--kill-grace", "1")
    sid = s.create()
    t0 = time.monotonic()
    r = s.eval(sid, "sum(range(10**12))")
    assert time.monotonic() - t0 < 3.0
    assert r["status"] == "killed" and r["stateLost"] is True and r["cause"] == "timeout"
    assert s.eval(sid, "1+1")["value"]["repr"] == "2"


def test_timeout_sync_sleep_survives(server):
    sid = server.create()
    server.eval(sid, "y = 5")
    t0 = time.monotonic()
    r = server.eval(sid, "import time\ntime.sleep(60)", timeout=0.5)
    assert time.monotonic() - t0 < 2.0
    assert r["status"] == "timeout" and r["stateLost"] is False and r["cause"] == "timeout"
    assert r["error"]["type"] == "TimeoutError"
    assert server.eval(sid, "y")["value"]["repr"] == "5"


def test_timeout_await_runs_finally(server):
    sid = server.create()
    r = server.eval(sid, "import asyncio\ntry:\n    await asyncio.sleep(60)\nfinally:\n    done = 'yes'", timeout=0.3)
    assert r["status"] == "timeout" and r["error"]["type"] == "TimeoutError" and not r["stateLost"]
    assert server.eval(sid, "done")["value"]["repr"] == "'yes'"


def test_timeout_counts_from_start_not_arrival(server):
    sid = server.create()
    first = server.send("session/eval", {"session": sid, "code": "import time; time.sleep(0.6)"})
    second = server.send("session/eval", {"session": sid, "code": "import time; time.sleep(0.3); 'ok'", "timeout": 0.5})
    assert server.reply(first)["result"]["status"] == "ok"
    r = server.reply(second)["result"]
    assert r["status"] == "ok" and r["value"]["repr"] == "'ok'"


def test_timeout_caught_and_finished_is_ok(server):
    sid = server.create()
    code = "import time\ntry:\n    time.sleep(60)\nexcept TimeoutError:\n    pass\n'survived'"
    r = server.eval(sid, code, timeout=0.3)
    assert r["status"] == "ok" and r["value"]["repr"] == "'survived'"


def test_zero_timeout_means_none(make_server):
    s = make_server("--timeout", "0.2")
    sid = s.create()
    r = s.eval(sid, "import time; time.sleep(0.4); 1", timeout=0)
    assert r["status"] == "ok"


def test_cancel_request_interrupts_eval(server):
    sid = server.create()
    rid = _start(server, sid, "import time\ntime.sleep(60)")
    server.notify("$/cancelRequest", {"id": rid})
    r = server.reply(rid)["result"]
    assert r["status"] == "interrupted" and not r["stateLost"]


def test_cancel_request_drops_queued_eval(server):
    sid = server.create()
    running = _start(server, sid, "import time\ntime.sleep(60)")
    queued = server.send("session/eval", {"session": sid, "code": "ran = True"})
    server.notify("$/cancelRequest", {"id": queued})
    r = server.reply(queued)["result"]
    assert r["status"] == "interrupted" and r["executionCount"] is None
    server.call("session/interrupt", {"session": sid})
    server.reply(running)
    assert server.eval(sid, "'ran' in globals()")["value"]["repr"] == "False"


def test_interrupt_named_queued_eval_leaves_running(server):
    sid = server.create()
    running = _start(server, sid, "import time\ntime.sleep(0.5)\n'first'")
    queued = server.send("session/eval", {"session": sid, "code": "'second'"})
    third = server.send("session/eval", {"session": sid, "code": "'third'"})
    assert server.call("session/interrupt", {"session": sid, "requestId": queued}) == {"interrupted": True}
    assert server.reply(queued)["result"]["status"] == "interrupted"
    assert server.reply(running)["result"]["value"]["repr"] == "'first'"
    assert server.reply(third)["result"]["value"]["repr"] == "'third'"


def test_interrupt_running_keeps_queue(server):
    sid = server.create()
    running = _start(server, sid, "import time\ntime.sleep(60)")
    queued = server.send("session/eval", {"session": sid, "code": "'next'"})
    server.call("session/interrupt", {"session": sid})
    assert server.reply(running)["result"]["status"] == "interrupted"
    assert server.reply(queued)["result"]["value"]["repr"] == "'next'"


def test_mcp_cancelled_interrupts_without_reply(server):
    sid = server.create()
    rid = _start(server, sid, "import time\ntime.sleep(60)")
    server.notify("notifications/cancelled", {"requestId": rid, "reason": "user"})
    # the session becomes idle again, and no reply is ever sent for rid
    assert server.eval(sid, "1")["value"]["repr"] == "1"
    assert server.replies.get(("int", rid)) is None


def test_blocked_socket_recv_interrupted(server):
    sid = server.create()
    rid = _start(server, sid, "import socket\na, b = socket.socketpair()\na.recv(10)")
    server.call("session/interrupt", {"session": sid})
    r = server.reply(rid)["result"]
    assert r["status"] == "interrupted" and not r["stateLost"]


def test_grandchildren_and_setsid_killed(server):
    sid = server.create()
    code = (
        "import subprocess, os\n"
        "p1 = subprocess.Popen(['sleep', '300'])\n"
        "p2 = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        import time; time.sleep(300)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "sum(range(10**12))"
    )
    rid = _start(server, sid, code, timeout=1)
    r = server.reply(rid, timeout=10)["result"]
    assert r["status"] == "killed"
    server.call("session/close", {"session": sid})
    server.assert_no_leftovers()


def test_close_kills_detached_descendants(server):
    sid = server.create()
    server.eval(sid, (
        "import subprocess\n"
        "subprocess.Popen(['setsid', 'sleep', '300'])\n"
        "subprocess.Popen(['sh', '-c', 'sleep 300 &'])\n"
    ))
    server.call("session/close", {"session": sid})
    server.assert_no_leftovers()
