"""Children that die or hit limits: honest ``killed`` results, fresh children, counted."""

import pytest

from tests.harness import RpcError, poll_until


@pytest.mark.parametrize(
    "code, cause",
    [
        ("import os\nos._exit(3)", "exit 3"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "signal SIGSEGV"),
        ("import ctypes\nctypes.string_at(0)", "signal SIGSEGV"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "memory"),
    ],
    ids=["exit3", "sigsegv", "ctypes-null", "sigkill-not-ours"],
)
def test_child_death_reported_and_replaced(server, code, cause):
    sid = server.create()
    server.eval(sid, "x = 1")
    r = server.eval(sid, code)
    assert (r["status"], r["stateLost"], r["cause"]) == ("killed", True, cause)
    r = server.eval(sid, "x")
    assert r["status"] == "error" and r["error"]["type"] == "NameError"
    assert server.eval(sid, "2 + 2")["value"]["repr"] == "4"
    stats = server.call("server/stats")
    assert stats["kills"][cause] == 1 and stats["evals"]["killed"] == 1


def test_death_while_idle_is_reported_on_next_eval(server):
    sid = server.create()
    server.eval(sid, "import os, threading, time\nthreading.Timer(0.05, lambda: os._exit(5)).start()")
    dead = lambda: server.call("session/list")["sessions"][0]["state"] == "dead"  # noqa: E731
    assert poll_until(dead, 10), "session never reported dead"
    r = server.eval(sid, "1")
    assert r["status"] == "ok" and r["stateLost"] is True


def test_memory_limit(make_server):
    s = make_server("--memory-mb", "300", "--kill-grace", "1")
    sid = s.create()
    s.eval(sid, "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()")
    r = s.eval(sid, "blocks = []\nwhile True:\n    blocks.append(bytearray(10 * 2**20))")
    assert (r["status"], r["stateLost"], r["cause"]) == ("killed", True, "memory")
    assert s.eval(sid, "1")["status"] == "ok"
    assert s.call("server/stats")["kills"]["memory"] == 1


def test_cpu_limit(make_server):
    s = make_server("--cpu-seconds", "1", "--kill-grace", "1")
    sid = s.create()
    r = s.eval(sid, "while True: pass", wait=30)
    assert (r["status"], r["stateLost"], r["cause"]) == ("killed", True, "cpu")
    assert s.eval(sid, "1")["status"] == "ok"


def test_session_limits_override(server):
    sid = server.create(limits={"openFiles": 20, "fileSizeMb": 1})
    r = server.eval(sid, "import resource; resource.getrlimit(resource.RLIMIT_NOFILE)")
    assert r["value"]["repr"] == "(20, 20)"
    r = server.eval(sid, "open('/tmp/cellbox-fsize-test', 'wb').write(b'x' * (2 * 2**20))")
    assert r["status"] in ("error", "killed")


def test_session_default_timeout_from_limits(server):
    sid = server.create(limits={"timeout": 0.3})
    r = server.eval(sid, "import time; print('ready', flush=True); time.sleep(30)")
    assert (r["status"], r["stateLost"], r["stdout"]) == ("timeout", False, "ready\n")


def test_memory_error_without_limit_is_plain_error(server):
    sid = server.create()
    r = server.eval(sid, "raise MemoryError('pretend')")
    assert r["status"] == "error" and r["error"]["type"] == "MemoryError" and not r["stateLost"]


def test_limits_too_low_to_start_are_a_clear_start_failure(server):
    with pytest.raises(RpcError) as exc:
        server.create(limits={"openFiles": 3})
    assert exc.value.code == -32012
    assert "cannot start under this session's limits" in exc.value.error["data"]
    assert "Too many open files" in exc.value.error["data"]
    sid = server.create()  # the server and its other sessions are fine
    assert server.eval(sid, "1")["value"]["repr"] == "1"
