"""Session lifecycle through the real server: create, eval, list, close, restart, stats, exit."""

import signal

import pytest

from tests.harness import RpcError, wait_gone

SLEEP = "import time\nprint('ready', flush=True)\ntime.sleep(30)"


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
    wait_gone(pid)


def test_restart_gives_fresh_namespace_same_id(server):
    sid = server.create()
    server.eval(sid, "x = 1")
    old = server.call("session/list")["sessions"][0]["pid"]
    r = server.call("session/restart", {"session": sid})
    assert r["session"] == sid and r["pid"] != old
    r = server.eval(sid, "x")
    assert r["error"]["type"] == "NameError" and r["executionCount"] == 1
    wait_gone(old)


def _outcome(r):
    return r["status"], r["stateLost"], r["cause"], r["executionCount"]


@pytest.mark.parametrize("method, cause", [("session/restart", "restart"), ("session/close", "closed")])
def test_close_and_restart_answer_running_and_queued(server, method, cause):
    """PROTOCOL.md section 4: evals running or queued on a closed or restarted session are
    answered ``killed``, ``stateLost: true``, with the cause; a dropped one never ran."""
    sid = server.create()
    server.eval(sid, "x = 1")
    running = server.start(sid, SLEEP)
    queued = [server.send("session/eval", {"session": sid, "code": "ran = True"}) for _ in range(2)]
    server.call(method, {"session": sid})
    assert _outcome(server.reply(running)["result"]) == ("killed", True, cause, 2)
    for rid in queued:
        assert _outcome(server.reply(rid)["result"]) == ("killed", True, cause, None)
    if method == "session/restart":  # the queued evals never ran in the fresh child either
        r = server.eval(sid, "'ran' in globals(), 'x' in globals()")
        assert r["value"]["repr"] == "(False, False)" and r["executionCount"] == 1


def test_evals_on_one_session_run_in_order(server):
    sid = server.create()
    ids = [server.send("session/eval", {"session": sid, "code": f"import time; time.sleep(0.01); L = globals().setdefault('L', []); L.append({i}); list(L)"}) for i in range(5)]
    last = server.reply(ids[-1])["result"]
    assert last["value"]["repr"] == "[0, 1, 2, 3, 4]"
    counts = [server.reply(i)["result"]["executionCount"] for i in ids]
    assert counts == [1, 2, 3, 4, 5]


def test_busy_session_does_not_delay_others(server):
    a, b = server.create(), server.create()
    slow = server.start(a, "print('ready', flush=True)\nwhile True: pass")
    # Session a never ends by itself: each answer arriving at all (within the call's own
    # deadline) shows it did not wait behind a.
    assert server.eval(b, "1 + 1", wait=10)["value"]["repr"] == "2"
    server.call("ping", timeout=10)
    assert {s["session"]: s["state"] for s in server.call("session/list", timeout=10)["sessions"]}[a] == "busy"
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
    s.start(sid, SLEEP)
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
    s.start(sid, "print('ready', flush=True)\nwhile True: pass")
    assert s.close() == 0
    s.assert_no_leftovers()


def test_a_session_is_addressed_by_its_name_as_well_as_its_id(server):
    sid = server.create(name="analysis")
    assert server.eval("analysis", "x = 6")["status"] == "ok"
    assert server.eval(sid, "x * 7")["value"]["repr"] == "42"
    rid = server.start("analysis", "import time\nprint('ready', flush=True)\ntime.sleep(30)")
    assert server.call("session/interrupt", {"session": "analysis"}) == {"interrupted": True}
    assert server.reply(rid)["result"]["status"] == "interrupted"
    server.call("session/writeFile", {"session": "analysis", "path": "f", "text": "by name"})
    assert server.eval(sid, "open('f').read()")["value"]["repr"] == "'by name'"
    with pytest.raises(RpcError) as info:
        server.create(name="analysis")
    assert info.value.code == -32602 and "analysis" in info.value.error["data"]
    server.call("session/close", {"session": "analysis"})
    with pytest.raises(RpcError) as info:
        server.eval("analysis", "x")
    assert info.value.code == -32010
    again = server.create(name="analysis")  # the name is free again
    assert again != sid and server.eval("analysis", "'x' in globals()")["value"]["repr"] == "False"
