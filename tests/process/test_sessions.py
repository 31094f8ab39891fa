"""Session lifecycle through the real server: create, eval, list, close, restart, stats, exit."""

import os
import signal
import time

import pytest

from tests.harness import RpcError


def test_create_eval_keeps_state(server):
    sid = server.create()
    r = server.eval(sid, "x = 40")
    assert r["status"] == "ok" and r["value"] is None and r["executionCount"] == 1
    r = server.eval(sid, "x + 2")
    assert r["status"] == "ok"
    assert r["value"]["repr"] == "42" and r["value"]["type"] == "int"
    assert r["executionCount"] == 2 and r["stateLost"] is False and r["cause"] is None


def test_result_has_every_field(server):
    sid = server.create()
    r = server.eval(sid, "print('hi')\n1")
    for key in ("status", "executionCount", "value", "error", "stdout", "stderr", "displays",
                "truncated", "warnings", "stateLost", "cause", "durationMs"):
        assert key in r, key
    assert r["stdout"] == "hi\n" and r["stderr"] == "" and r["truncated"] == {"stdout": 0, "stderr": 0}


def test_top_level_await(server):
    sid = server.create()
    r = server.eval(sid, "import asyncio\nawait asyncio.sleep(0, 40) + 2")
    assert r["value"]["repr"] == "42"


def test_sessions_are_isolated(server):
    a, b = server.create(), server.create()
    server.eval(a, "x = 'a'")
    r = server.eval(b, "x")
    assert r["status"] == "error" and r["error"]["type"] == "NameError"
    assert server.eval(a, "x")["value"]["repr"] == "'a'"
    pa = server.call("session/list")["sessions"]
    assert {s["session"] for s in pa} == {a, b}
    assert len({s["pid"] for s in pa}) == 2


def test_list_fields(server):
    sid = server.create(name="mine")
    server.eval(sid, "1")
    (info,) = server.call("session/list")["sessions"]
    assert info["session"] == sid and info["name"] == "mine" and info["state"] == "idle"
    assert info["executionCount"] == 1 and info["pid"] > 0 and info["rssBytes"] > 0
    assert "T" in info["createdAt"]


def test_close_then_unknown(server):
    sid = server.create()
    pid = server.call("session/list")["sessions"][0]["pid"]
    assert server.call("session/close", {"session": sid}) is None
    with pytest.raises(RpcError) as exc:
        server.eval(sid, "1")
    assert exc.value.code == -32010
    with pytest.raises(RpcError) as exc:
        server.call("session/close", {"session": sid})
    assert exc.value.code == -32010
    _gone(pid)


def test_restart_gives_fresh_namespace_same_id(server):
    sid = server.create()
    server.eval(sid, "x = 1")
    old = server.call("session/list")["sessions"][0]["pid"]
    r = server.call("session/restart", {"session": sid})
    assert r["session"] == sid and r["pid"] != old
    r = server.eval(sid, "x")
    assert r["error"]["type"] == "NameError" and r["executionCount"] == 1
    _gone(old)


def test_restart_answers_running_and_queued(server):
    sid = server.create()
    running = server.send("session/eval", {"session": sid, "code": "import time; time.sleep(30)"})
    queued = server.send("session/eval", {"session": sid, "code": "1"})
    _wait_busy(server, sid)
    server.call("session/restart", {"session": sid})
    r1 = server.reply(running)["result"]
    r2 = server.reply(queued)["result"]
    assert (r1["status"], r1["stateLost"], r1["cause"]) == ("killed", True, "restart")
    assert (r2["status"], r2["cause"], r2["executionCount"]) == ("killed", "restart", None)


def test_close_answers_running_and_queued(server):
    sid = server.create()
    running = server.send("session/eval", {"session": sid, "code": "import time; time.sleep(30)"})
    queued = server.send("session/eval", {"session": sid, "code": "1"})
    _wait_busy(server, sid)
    server.call("session/close", {"session": sid})
    assert server.reply(running)["result"]["cause"] == "closed"
    r = server.reply(queued)["result"]
    assert r["status"] == "killed" and r["cause"] == "closed" and r["executionCount"] is None


def test_evals_on_one_session_run_in_order(server):
    sid = server.create()
    ids = [server.send("session/eval", {"session": sid, "code": f"import time; time.sleep(0.01); L = globals().setdefault('L', []); L.append({i}); list(L)"}) for i in range(5)]
    last = server.reply(ids[-1])["result"]
    assert last["value"]["repr"] == "[0, 1, 2, 3, 4]"
    counts = [server.reply(i)["result"]["executionCount"] for i in ids]
    assert counts == [1, 2, 3, 4, 5]


def test_busy_session_does_not_delay_others(server):
    a, b = server.create(), server.create()
    slow = server.send("session/eval", {"session": a, "code": "while True: pass"})
    _wait_busy(server, a)
    t0 = time.monotonic()
    assert server.eval(b, "1 + 1")["value"]["repr"] == "2"
    server.call("ping")
    server.call("session/list")
    assert time.monotonic() - t0 < 2.0
    server.call("session/interrupt", {"session": a})
    assert server.reply(slow)["result"]["status"] == "interrupted"


def test_stats_count(server):
    sid = server.create()
    server.eval(sid, "1")
    server.eval(sid, "1/0")
    stats = server.call("server/stats")
    assert stats["sessions"]["open"] == 1 and stats["sessions"]["created"] == 1
    assert stats["evals"]["ok"] == 1 and stats["evals"]["error"] == 1
    assert stats["uptimeSeconds"] >= 0
    assert "detected_blocking_call" in stats["detections"]


def test_cwd_and_env(server, tmp_path):
    sid = server.create(cwd=str(tmp_path), env={"CELLBOX_X": "yes"})
    r = server.eval(sid, "import os; (os.getcwd(), os.environ['CELLBOX_X'])")
    assert r["value"]["repr"] == repr((str(tmp_path), "yes"))


def test_bad_cwd_is_start_failure(server):
    with pytest.raises(RpcError) as exc:
        server.create(cwd="/no/such/dir")
    assert exc.value.code == -32012


def test_max_sessions(make_server):
    s = make_server("--max-sessions", "1")
    s.create()
    with pytest.raises(RpcError) as exc:
        s.create()
    assert exc.value.code == -32011


def test_shutdown_then_exit(make_server):
    s = make_server()
    s.create()
    assert s.call("shutdown") is None
    with pytest.raises(RpcError) as exc:
        s.call("ping")
    assert exc.value.code == -32013
    s.notify("exit")
    assert s.proc.wait(10) == 0
    s.assert_no_leftovers()


def test_exit_without_shutdown_is_1(make_server):
    s = make_server()
    s.create()
    s.notify("exit")
    assert s.proc.wait(10) == 1
    s.assert_no_leftovers()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_server_closes_everything(make_server, sig):
    s = make_server()
    sid = s.create()
    s.send("session/eval", {"session": sid, "code": "import time; time.sleep(30)"})
    _wait_busy(s, sid)
    s.proc.send_signal(sig)
    assert s.proc.wait(10) == 0
    s.assert_no_leftovers()


def test_server_sigkill_leaves_no_child(make_server):
    s = make_server()
    sid = s.create()
    s.eval(sid, "import subprocess; p = subprocess.Popen(['sleep', '60'])")
    s.proc.kill()
    s.proc.wait(10)
    s.assert_no_leftovers()


def test_stdin_eof_exits_zero_with_work_running(make_server):
    s = make_server()
    sid = s.create()
    s.send("session/eval", {"session": sid, "code": "while True: pass"})
    _wait_busy(s, sid)
    assert s.close() == 0
    s.assert_no_leftovers()


def _wait_busy(server, sid):
    """Poll session/list (a real request each time) until the eval is running."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for s in server.call("session/list")["sessions"]:
            if s["session"] == sid and s["state"] == "busy":
                return
    raise AssertionError("session never became busy")


def _gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
    raise AssertionError(f"pid {pid} still alive")
