"""Kernel containment: each session in a PID namespace of its own, through the real server.

Where this machine cannot create PID namespaces (not root), ``initialize`` must say so and
why (checked here everywhere); the tests of the namespaces themselves then skip, saying why.
CI runs as root, where none of them skips.
"""

from __future__ import annotations

import os

import pytest

from cellbox.supervisor import cgroups, process
from tests.harness import poll_until

UNAVAILABLE = process.containment_unavailable()
NO_CGROUPS = cgroups.unavailable()

def test_initialize_reports_the_containment_in_use(server):
    isolation = server.call("initialize", {})["capabilities"]["cellbox"]["isolation"]
    expected = (["pidns"] if UNAVAILABLE is None else []) + (["cgroup1"] if NO_CGROUPS is None else [])
    assert isolation["containment"] == expected
    missing = {k: v for k, v in (("pidns", UNAVAILABLE), ("cgroup", NO_CGROUPS)) if v is not None}
    assert {k: v for k, v in isolation.get("missing", {}).items() if k != "strict"} == missing


def test_no_containment_is_reported_when_turned_off(make_server):
    server = make_server("--no-containment")
    isolation = server.call("initialize", {})["capabilities"]["cellbox"]["isolation"]
    assert isolation["containment"] == []
    missing = {k: v for k, v in isolation["missing"].items() if k != "strict"}
    assert missing == {"pidns": UNAVAILABLE or "turned off (--no-containment)", "cgroup": "turned off (--no-containment)"}


needs_pidns = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"containment unavailable: {UNAVAILABLE}")


@needs_pidns
def test_a_cell_sees_only_its_session_and_cannot_signal_the_supervisor(server):
    sid = server.create()
    server.eval(sid, "x = 1")
    r = server.eval(sid, "import os; sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
    assert r["value"]["repr"] == "[1, 2]"  # its init and itself
    # The supervisor has no pid in the session's namespace; its init ignores the signal.
    for target, outcome in ((server.proc.pid, "'no such process'"), (1, "'sent'")):
        r = server.eval(sid, f"import os, signal\ntry:\n    os.kill({target}, signal.SIGSTOP); r = 'sent'\n"
                             f"except ProcessLookupError:\n    r = 'no such process'\nr")
        assert r["value"]["repr"] == outcome, r
    assert server.call("ping") == {}
    assert server.eval(sid, "x")["value"]["repr"] == "1"
    (listed,) = server.call("session/list")["sessions"]
    with open(f"/proc/{listed['pid']}/comm") as f:  # the pid listed is the child's, seen from here
        assert f.read().strip() == f"cbx{sid}"[:15]


@needs_pidns
def test_orphans_inside_are_reaped(server):
    sid = server.create()
    code = ("import os\nfor _ in range(20):\n    if os.fork() == 0:\n        if os.fork() == 0:\n"
            "            os._exit(0)\n        os._exit(0)\n    os.wait()")
    assert server.eval(sid, code)["status"] == "ok"
    zombies = ("import os\ndef zombies():\n    out = []\n    for p in os.listdir('/proc'):\n"
               "        try:\n            with open(f'/proc/{p}/stat') as f:\n"
               "                if f.read().rsplit(')', 1)[1].split()[0] == 'Z': out.append(p)\n"
               "        except (OSError, IndexError):\n            pass\n"
               "    return out\nzombies()")
    poll_until(lambda: server.eval(sid, zombies)["value"]["repr"] == "[]", 10)


@pytest.mark.parametrize("code, cause", [
    ("import os; os._exit(3)", "exit 3"),
    # A SIGKILL the supervisor did not send is named "memory" (PROTOCOL.md), with or without
    # a cgroup to count OOM kills.
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "memory"),
    ("import ctypes; ctypes.string_at(0)", "signal SIGSEGV"),
])
def test_exit_causes_with_and_without_containment(either_server, code, cause):
    server = either_server
    sid = server.create()
    r = server.eval(sid, code)
    assert (r["status"], r["cause"], r["stateLost"]) == ("killed", cause, True), r
    assert server.eval(sid, "1 + 1")["value"]["repr"] == "2"


def test_interrupts_and_timeouts_work_contained(either_server):
    server = either_server
    sid = server.create()
    server.eval(sid, "kept = 7")
    rid = server.start(sid, "import time\nprint('ready', flush=True)\ntime.sleep(60)")
    server.call("session/interrupt", {"session": sid})
    assert server.reply(rid, 20)["result"]["status"] == "interrupted"
    r = server.eval(sid, "while True: pass", timeout=0.5)
    assert (r["status"], r["stateLost"]) == ("timeout", False)
    r = server.eval(sid, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                         "while True: pass", timeout=0.3, wait=30)
    assert (r["status"], r["cause"], r["stateLost"]) == ("killed", "timeout", True)
    assert server.eval(sid, "'kept' in globals()")["value"]["repr"] == "False"
    assert server.call("ping") == {}


needs_cgroups = pytest.mark.skipif(NO_CGROUPS is not None, reason=f"no cgroups: {NO_CGROUPS}")

FORKS_ALLOCATE = """
import os, time
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        b = bytearray(200 << 20)
        for j in range(0, len(b), 4096):
            b[j] = 1
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
[os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids]
"""


@needs_cgroups
@pytest.mark.timeout(60)
def test_memory_mb_holds_for_all_the_sessions_processes_together(server):
    witness = server.create()
    server.eval(witness, "kept = 1")
    sid = server.create(limits={"memoryMb": 300})
    r = server.eval(sid, FORKS_ALLOCATE, wait=40)
    assert r["status"] == "ok", r
    codes = eval(r["value"]["repr"])  # 4 x 200 MB in 300 MB: the kernel kills some
    assert -9 in codes and codes.count(0) <= 1, codes
    assert server.eval(sid, "1 + 1")["value"]["repr"] == "2"  # the session itself goes on
    assert server.eval(witness, "kept")["value"]["repr"] == "1"


@needs_cgroups
@pytest.mark.timeout(60)
def test_processes_is_a_limit_even_for_root(server):
    sid = server.create(limits={"processes": 20})
    code = ("import os, time\nn = 0\ntry:\n    for i in range(400):\n        if os.fork() == 0:\n"
            "            time.sleep(2)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
            "    err = e.errno\n(n < 20, err)")
    r = server.eval(sid, code, wait=40)
    assert r["value"]["repr"] == "(True, 11)", r  # EAGAIN before the 20th
    assert server.eval(sid, "1 + 1")["value"]["repr"] == "2"


@needs_cgroups
@pytest.mark.timeout(60)
def test_an_oom_kill_of_the_child_is_named_by_its_cgroup(server):
    sid = server.create(limits={"memoryMb": 250})
    # Pages of a memfd count against the cgroup but not against the per-process address-space
    # limit (which would raise MemoryError first): the kernel's OOM killer ends the child.
    code = "import os\nfd = os.memfd_create('fill')\nchunk = b'x' * (1 << 20)\nfor _ in range(600):\n    os.write(fd, chunk)"
    r = server.eval(sid, code, wait=40)
    assert (r["status"], r["cause"], r["stateLost"]) == ("killed", "memory", True), r
    assert server.eval(sid, "1 + 1")["value"]["repr"] == "2"


@pytest.mark.timeout(60)
def test_a_killed_servers_cgroups_and_work_directories_are_removed(make_server):
    import glob

    server = make_server()
    workdir = server.call("session/create", {}, timeout=30)["workdir"]
    groups = glob.glob(f"/sys/fs/cgroup/*/**/cellbox-{server.proc.pid}", recursive=True)
    assert (len(groups) > 0) == (NO_CGROUPS is None)
    server.proc.kill()
    server.proc.wait(10)
    poll_until(lambda: not os.path.exists(workdir) and not any(os.path.exists(g) for g in groups), 20)


@needs_cgroups
@pytest.mark.timeout(60)
def test_cpu_percent_holds_the_session_to_its_quota(server):
    sid = server.create(limits={"cpuPercent": 20})
    code = ("import time, resource\nt0 = time.monotonic(); c0 = time.process_time()\n"
            "while time.monotonic() - t0 < 1.0:\n    pass\n(time.process_time() - c0) / (time.monotonic() - t0)")
    share = float(server.eval(sid, code, wait=30)["value"]["repr"])
    assert share < 0.5, share  # about 0.2 of a core, not a whole one
