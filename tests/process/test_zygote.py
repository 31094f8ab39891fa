"""Children forked by the zygote behave like fresh ones; fallbacks and respawns work."""

import os
import signal

from tests.harness import _comm, poll_until


def _helpers(server, name):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and _comm(pid) == name:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"CELLBOX_TEST_TAG={server.tag}".encode() in f.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out


def test_zygote_reported_and_children_adopted(server):
    caps = server.call("initialize", {})["capabilities"]["cellbox"]
    assert caps["zygote"] is True
    sid = server.create()
    assert server.adopter(sid) == server.proc.pid


def test_zygote_children_adopted_without_containment(make_server):
    server = make_server("--no-containment")
    sid = server.create()
    assert server.eval(sid, "import os; os.getppid()")["value"]["repr"] == str(server.proc.pid)


def test_forked_children_differ_in_random_state(server):
    a, b = server.create(), server.create()
    code = "import random, os; (random.random(), os.urandom(4).hex())"
    assert server.eval(a, code)["value"]["repr"] != server.eval(b, code)["value"]["repr"]


def test_session_env_and_cwd_applied_to_forked_child(server, tmp_path):
    sid = server.create(cwd=str(tmp_path), env={"CELLBOX_Y": "1"})
    r = server.eval(sid, "import os, subprocess; (os.getcwd(), os.environ['CELLBOX_Y'], subprocess.run(['sh', '-c', 'echo $CELLBOX_Y'], capture_output=True, text=True).stdout)")
    assert r["value"]["repr"] == repr((str(tmp_path), "1", "1\n"))


def test_interpreter_env_falls_back_to_fresh_start(server):
    sid = server.create(env={"PYTHONDONTWRITEBYTECODE": "1"})
    r = server.eval(sid, "import sys; sys.flags.dont_write_bytecode")
    assert r["value"]["repr"] == "1"


def test_no_zygote_flag(make_server):
    s = make_server("--no-zygote", "--warm", "0")
    assert s.call("initialize", {})["capabilities"]["cellbox"]["zygote"] is False
    sid = s.create()
    assert s.eval(sid, "40 + 2")["value"]["repr"] == "42"
    assert not _helpers(s, "cellbox-zygote")


def test_zygote_death_is_survived(server):
    sid = server.create()
    assert poll_until(lambda: _helpers(server, "cellbox-zygote"), 10), "no zygote"
    for pid in _helpers(server, "cellbox-zygote"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # a short-lived fork of the zygote (it shares the name) already exited
    assert server.eval(sid, "1")["value"]["repr"] == "1"  # existing sessions do not care
    others = [server.create() for _ in range(4)]  # new ones still start (respawned or fresh)
    for o in others:
        assert server.eval(o, "2")["value"]["repr"] == "2"


def test_memory_limit_on_forked_child(make_server):
    s = make_server("--memory-mb", "400")
    sid = s.create()
    r = s.eval(sid, "import resource; resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20")
    assert r["value"]["repr"] == "400"
    r = s.eval(sid, "import threading\nts = [threading.Thread(target=lambda: None) for _ in range(8)]\nfor t in ts: t.start()\nfor t in ts: t.join()\n'threads ok'")
    assert r["value"]["repr"] == "'threads ok'"
