"""Attacks on the server by the code it runs, each through the real server.

Every attack must fail safely: the attacking session answers honestly (or is killed), the
server keeps answering, a witness session keeps its variable, and when the test ends nothing
the attack started is left running (the ``make_server`` fixture checks the server's tag; the
escapes that empty their environment are looked for by a token on their command line).

The attacks that rely on the kernel's containment (a PID namespace and cgroups per session)
skip where ``cellbox doctor`` says it is not available, and say why; CI runs as root, where
none of them skips.
"""

from __future__ import annotations

import os
import uuid

import pytest

from cellbox.supervisor import cgroups, process
from tests.harness import poll_until

NO_PIDNS = process.containment_unavailable()
NO_CGROUPS = cgroups.unavailable()
NO_STRICT = process.strict_missing(zygote=True)
needs_pidns = pytest.mark.skipif(NO_PIDNS is not None, reason=f"no PID namespaces here: {NO_PIDNS}")
needs_cgroups = pytest.mark.skipif(NO_CGROUPS is not None, reason=f"no cgroups here: {NO_CGROUPS}")


@pytest.fixture(params=["process", "strict"])
def arena(request, make_server):
    """A server whose sessions are of each isolation, a witness session holding a variable,
    and a check that both are fine."""
    if request.param == "strict" and NO_STRICT:
        pytest.skip(f"strict isolation unavailable: {NO_STRICT}")
    server = make_server("--kill-grace", "0.5", "--isolation", request.param)
    server.isolation = request.param
    witness = server.create()
    server.eval(witness, "secret = 'witness-42'")

    def unharmed() -> None:
        assert server.call("ping") == {}
        assert server.eval(witness, "secret")["value"]["repr"] == "'witness-42'"

    server.unharmed = unharmed
    server.witness = witness
    return server


def _running(token: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


@needs_cgroups
@pytest.mark.timeout(90)
def test_fork_bomb_is_bounded_by_processes(arena):
    sid = arena.create(limits={"processes": 40})
    bomb = ("import os, time\n"
            "def spawn():\n"
            "    while True:\n"
            "        try:\n"
            "            if os.fork() == 0:\n"
            "                spawn()\n"
            "        except OSError:\n"
            "            time.sleep(0.01)\n"
            "spawn()")
    r = arena.eval(sid, bomb, timeout=2, wait=40)
    assert r["status"] in ("timeout", "killed"), r
    count = "len([p for p in __import__('os').listdir('/proc') if p.isdigit()])"
    alive = arena.eval(sid, count, wait=20)
    assert alive["status"] == "ok" and int(alive["value"]["repr"]) <= 40, alive
    arena.call("session/restart", {"session": sid}, timeout=30)  # the bomb goes with the namespace
    assert arena.eval(sid, count)["value"]["repr"] == "2"
    arena.unharmed()


@needs_cgroups
def test_thread_bomb_is_bounded_by_processes(arena):
    sid = arena.create(limits={"processes": 30})
    code = ("import threading, time\nn = 0\ntry:\n    for _ in range(1000):\n"
            "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n        n += 1\n"
            "except RuntimeError:\n    pass\nn < 30")
    assert arena.eval(sid, code, wait=30)["value"]["repr"] == "True"
    arena.unharmed()


@needs_cgroups
@pytest.mark.timeout(60)
def test_memory_bomb_across_forked_children_is_bounded(arena):
    sid = arena.create(limits={"memoryMb": 256})
    code = ("import os\nkids = []\nfor _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
            "        b = bytearray(150 << 20)\n        for j in range(0, len(b), 4096): b[j] = 1\n"
            "        import time; time.sleep(2); os._exit(0)\n    kids.append(pid)\n"
            "sum(os.waitpid(k, 0)[1] == 0 for k in kids)")
    r = arena.eval(sid, code, wait=40)
    assert r["status"] == "ok" and int(r["value"]["repr"]) <= 1, r  # at most one fits
    arena.unharmed()


def test_disk_filler_is_bounded_by_file_size(arena):
    sid = arena.create(limits={"fileSizeMb": 5})
    code = ("f = open('fill', 'wb')\ntry:\n    for _ in range(100):\n"
            "        f.write(b'x' * (1 << 20)); f.flush()\n    r = 'wrote it all'\nexcept OSError as e:\n"
            "    r = e.errno\nr")
    r = arena.eval(sid, code)
    assert r["status"] in ("ok", "killed"), r
    (entry,) = arena.call("session/listFiles", {"session": sid})["entries"]
    assert entry["path"] == "fill" and entry["size"] <= 5 << 20
    arena.unharmed()


def test_fd_exhaustion_stays_in_the_session(arena):
    sid = arena.create(limits={"openFiles": 64})
    code = ("fs = []\ntry:\n    while True:\n        fs.append(open('/dev/null'))\nexcept OSError as e:\n"
            "    err = e.errno\nfor f in fs: f.close()\n(len(fs) < 64, err)")
    assert arena.eval(sid, code)["value"]["repr"] == "(True, 24)"  # EMFILE
    assert arena.eval(sid, "print('still talking')")["stdout"] == "still talking\n"
    arena.unharmed()


@needs_pidns
@pytest.mark.parametrize("then", ["close", "restart", "exit", "server killed"])
def test_daemon_escape_dies_with_the_session(make_server, then):
    """A daemon that leaves by every door (double fork, new session, emptied environment,
    exec) is found afterwards only by the token on its command line."""
    server = make_server()
    sid = server.create()
    token = f"cbx-adv-{uuid.uuid4().hex}"
    code = ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', {token!r}], {{}})\n"
            "    os._exit(0)\nos.wait()")
    assert server.eval(sid, code)["status"] == "ok"
    poll_until(lambda: _running(token), 10)
    if then == "close":
        server.call("session/close", {"session": sid})
    elif then == "restart":
        server.call("session/restart", {"session": sid}, timeout=30)
        assert server.eval(sid, "1 + 1")["value"]["repr"] == "2"
    elif then == "exit":
        assert server.eval(sid, "import os; os._exit(0)")["status"] == "killed"
    else:
        server.proc.kill()
        server.proc.wait(10)
    poll_until(lambda: not _running(token), 10)


@needs_pidns
def test_the_server_and_its_helpers_cannot_be_signalled(arena):
    sid = arena.create()
    targets = [arena.proc.pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_helper(int(p))]
    code = ("import os, signal\nout = []\nfor pid in %r:\n    try:\n        os.kill(pid, signal.SIGSTOP)\n"
            "        out.append('sent')\n    except ProcessLookupError:\n        out.append('none')\nout") % targets
    r = arena.eval(sid, code)
    assert eval(r["value"]["repr"]) == ["none"] * len(targets), r  # no pid of theirs in its namespace
    arena.unharmed()


def _is_helper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() in ("cellbox-sentry", "cellbox-zygote")
    except OSError:
        return False


@needs_pidns
def test_supervisor_memory_and_ptrace_are_out_of_reach(arena):
    sid = arena.create()
    pid = arena.proc.pid
    code = (f"import ctypes, os\nout = []\ntry:\n    open('/proc/{pid}/mem', 'rb')\n    out.append('opened')\n"
            "except OSError as e:\n    out.append(type(e).__name__)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"out.append(libc.ptrace(16, {pid}, None, None))\nout.append(ctypes.get_errno())\nout")
    refused = 1 if arena.isolation == "strict" else 3  # seccomp's EPERM comes first; else ESRCH
    assert arena.eval(sid, code)["value"]["repr"] == f"['FileNotFoundError', -1, {refused}]"
    arena.unharmed()


@pytest.mark.skipif(bool(NO_STRICT), reason=f"strict isolation unavailable: {NO_STRICT}")
def test_a_strict_session_cannot_read_or_write_the_hosts_private_files(make_server, tmp_path_factory):
    server = make_server("--isolation", "strict")
    secret = f"/var/tmp/cbx-secret-{uuid.uuid4().hex}"
    with open(secret, "w") as f:
        f.write("host only")
    os.chmod(secret, 0o600)
    try:
        sid = server.create()
        code = (f"out = []\nfor mode in ('r', 'a'):\n    try:\n        open({secret!r}, mode); out.append('opened')\n"
                "    except OSError as e:\n        out.append(type(e).__name__)\nout")
        assert server.eval(sid, code)["value"]["repr"] == "['PermissionError', 'PermissionError']"
        with open(secret) as f:
            assert f.read() == "host only"
    finally:
        os.unlink(secret)


@needs_pidns
def test_another_sessions_memory_and_environment_are_out_of_reach(arena):
    (witness_pid,) = [s["pid"] for s in arena.call("session/list")["sessions"] if s["session"] == arena.witness]
    sid = arena.create()
    code = (f"out = []\nfor what in ('environ', 'mem', 'maps'):\n    try:\n"
            f"        open('/proc/{witness_pid}/' + what, 'rb').read(1)\n        out.append('read')\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\nout")
    assert set(eval(arena.eval(sid, code)["value"]["repr"])) == {"FileNotFoundError"}
    arena.unharmed()


def test_ctypes_crash_is_an_honest_kill(arena):
    sid = arena.create()
    r = arena.eval(sid, "import ctypes\nctypes.memset(0, 1, 1)")
    assert (r["status"], r["cause"], r["stateLost"]) == ("killed", "signal SIGSEGV", True)
    arena.unharmed()


def test_garbage_on_the_private_channel_is_an_honest_kill(arena):
    sid = arena.create()
    code = "import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'\\xff' * 64)\n    except OSError:\n        pass"
    r = arena.eval(sid, code, wait=30)
    assert r["status"] == "killed" and r["stateLost"], r
    assert arena.eval(sid, "1 + 1")["value"]["repr"] == "2"
    arena.unharmed()


@needs_pidns
def test_a_contained_root_cell_cannot_leave_its_namespace_or_cgroups(make_server):
    server = make_server("--kill-grace", "0.5")
    sid = server.create(limits={"processes": 10})
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
            "out['umount /proc'] = (libc.umount2(b'/proc', 2), ctypes.get_errno())\n"
            "out['cgroup files'] = os.listdir('/sys/fs/cgroup')\n"
            "out['mount cgroupfs'] = (libc.mount(b'cgroup', b'/mnt', b'cgroup', 0, b'pids'), ctypes.get_errno())\n"
            "opened = set()\nfor n in os.listdir('/proc/1/fd'):\n    try:\n"
            "        os.close(os.open(f'/proc/1/fd/{n}', os.O_WRONLY)); opened.add('opened')\n"
            "    except OSError as e:\n        opened.add(type(e).__name__)\nout['init fds'] = sorted(opened)\n"
            "out['ptrace init'] = (libc.ptrace(16, 1, None, None), ctypes.get_errno())\nout")
    out = server.eval(sid, code)["value"]["repr"]
    out = eval(out)
    assert out["umount /proc"] == (-1, 1) and out["mount cgroupfs"] == (-1, 1), out  # EPERM
    assert out["cgroup files"] == [] and out["init fds"] == ["PermissionError"], out
    assert out["ptrace init"] == (-1, 1), out


@needs_cgroups
def test_an_earlier_oom_of_a_subprocess_does_not_name_a_later_exit(make_server):
    server = make_server()
    sid = server.create(limits={"memoryMb": 256})
    # Two children of 150 MB in a 256 MB session: the kernel kills one of them.
    code = ("import os, time\nkids = []\nfor _ in range(2):\n    pid = os.fork()\n    if pid == 0:\n"
            "        b = bytearray(150 << 20)\n        for j in range(0, len(b), 4096): b[j] = 1\n"
            "        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n"
            "sorted(os.waitpid(k, 0)[1] for k in kids)")
    assert server.eval(sid, code, wait=40)["value"]["repr"] == "[0, 9]"
    r = server.eval(sid, "os._exit(3)")
    assert (r["status"], r["cause"]) == ("killed", "exit 3"), r


@needs_cgroups
def test_processes_counts_the_sessions_own_processes_only(make_server):
    server = make_server()
    sid = server.create(limits={"processes": 3})  # the child, its output flusher, one more
    code = ("import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)[1]")
    assert server.eval(sid, code)["value"]["repr"] == "0"
