"""``isolation: "strict"``: user, network and mount namespaces, Landlock and seccomp, through
the real server. Where the host lacks a layer, creating a strict session must fail with
-32012 naming it (checked here everywhere); the tests of the layers themselves then skip,
saying why. CI makes the Python installation readable by other users and runs as root, where
none of them skips.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from cellbox.supervisor import process
from tests.harness import RpcError

MISSING = process.strict_missing(zygote=True)
needs_strict = pytest.mark.skipif(bool(MISSING), reason=f"strict isolation unavailable: {MISSING}")


def _value(server, sid, code, **kw):
    r = server.eval(sid, code, **kw)
    assert r["status"] == "ok", r
    return eval(r["value"]["repr"])


def test_strict_is_reported_and_refused_where_a_layer_is_missing(make_server):
    server = make_server()
    isolation = server.call("initialize", {})["capabilities"]["cellbox"]["isolation"]
    if MISSING:
        assert isolation["strict"] == [] and isolation["missing"]["strict"] == "; ".join(MISSING)
        with pytest.raises(RpcError) as info:
            server.create(isolation="strict")
        assert info.value.code == -32012 and "strict isolation needs" in info.value.error["data"]
    else:
        assert isolation["strict"] == ["userns", "netns", "mountns", "landlock", "seccomp"]
        assert "strict" not in isolation.get("missing", {})


def test_without_the_zygote_strict_is_refused(make_server):
    server = make_server("--no-zygote")
    with pytest.raises(RpcError) as info:
        server.create(isolation="strict")
    assert info.value.code == -32012 and "zygote" in info.value.error["data"]


@needs_strict
def test_a_strict_session_runs_cells_like_any_other(make_server):
    server = make_server("--kill-grace", "0.5")
    created = server.call("session/create", {"isolation": "strict"}, timeout=30)
    sid, workdir = created["session"], created["workdir"]
    assert _value(server, sid, "import os; (os.getuid(), os.getcwd(), os.environ['HOME'])") == (1000, workdir, "/tmp")
    # The Python it runs is there (even a venv under /tmp, behind the private /tmp), read-only.
    assert _value(server, sid, "import sys, os; os.path.isdir(sys.prefix) and not os.access(sys.prefix, os.W_OK)")
    assert _value(server, sid, "import asyncio\nawait asyncio.sleep(0.01)\nx = 41\nx + 1") == 42
    rid = server.start(sid, "import time\nprint('ready', flush=True)\ntime.sleep(30)")
    server.call("session/interrupt", {"session": sid})
    assert server.reply(rid, 20)["result"]["status"] == "interrupted"
    r = server.eval(sid, "while True: pass", timeout=0.5)
    assert (r["status"], r["stateLost"]) == ("timeout", False)
    assert _value(server, sid, "x") == 41
    assert _value(server, sid, "import subprocess; subprocess.run(['true']).returncode") == 0
    server.eval(sid, "import os")  # (answered from the live namespace, without jedi's warm-up)
    matches = server.call("session/complete", {"session": sid, "code": "os.getc", "cursor": 7})
    assert "getcwd" in matches["matches"]
    server.call("session/writeFile", {"session": sid, "path": "d/in.txt", "text": "from outside"})
    assert _value(server, sid, "open('d/in.txt', 'a').write('+'); open('d/in.txt').read()") == "from outside+"


@needs_strict
def test_outside_its_uid_the_session_is_nobody_and_has_no_capabilities(make_server):
    server = make_server()
    sid = server.create(isolation="strict")
    (pid,) = [s["pid"] for s in server.call("session/list")["sessions"] if s["session"] == sid]
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    uids = {int(u) for u in status["Uid"].split()}
    assert len(uids) == 1 and uids.pop() >= 1_000_000  # an unprivileged id no account uses
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter


@needs_strict
def test_writes_only_in_the_work_directory_and_a_private_tmp(make_server, tmp_path):
    server = make_server()
    sid = server.create(isolation="strict")
    marker = tmp_path / "host-file"
    marker.write_text("host")
    os.chmod(tmp_path, 0o777)
    code = ("import os\nout = {}\nfor path in ('here.txt', '/tmp/mine', %r, '/etc/cellbox-evil', '/var/tmp/evil'):\n"
            "    try:\n        open(path, 'w').write('x'); out[path] = 'wrote'\n"
            "    except OSError as e:\n        out[path] = type(e).__name__\n"
            "out['host /tmp seen'] = os.path.exists(%r)\nout") % (str(tmp_path / "new"), str(marker))
    out = _value(server, sid, code)
    assert out["here.txt"] == "wrote" and out["/tmp/mine"] == "wrote"
    # The host's /tmp is not the session's (its own is empty but for the work directory).
    assert out[str(tmp_path / "new")] == "FileNotFoundError" and not (tmp_path / "new").exists()
    assert out["/etc/cellbox-evil"] == "PermissionError" and out["/var/tmp/evil"] == "PermissionError"
    assert out["host /tmp seen"] is False and not os.path.exists("/tmp/mine")


@needs_strict
def test_no_network_but_its_own_loopback_unless_asked(make_server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: listener.accept(), daemon=True).start()
    try:
        server = make_server()
        sid = server.create(isolation="strict")
        code = ("import socket\nout = []\nfor addr in (('127.0.0.1', %d), ('10.255.255.1', 80), ('1.1.1.1', 53)):\n"
                "    try:\n        socket.create_connection(addr, timeout=3).close(); out.append('connected')\n"
                "    except OSError as e:\n        out.append(e.errno)\n"
                "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                "c = socket.create_connection(s.getsockname()); out.append('own loopback')\nout") % port
        assert _value(server, sid, code) == [111, 101, 101, "own loopback"]  # refused, unreachable
        networked = server.create(isolation="strict", network=True)
        reach = ("import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=3).close()\n'connected'") % port
        assert _value(server, networked, reach) == "connected"
    finally:
        listener.close()


@needs_strict
def test_the_seccomp_filter_refuses_what_it_must(make_server):
    server = make_server()
    sid = server.create(isolation="strict")
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
            "for name, call in (('ptrace', lambda: libc.ptrace(0, 0, 0, 0)),\n"
            "                   ('unshare', lambda: libc.unshare(0x20000000)),\n"
            "                   ('mount', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)),\n"
            "                   ('keyctl', lambda: libc.syscall(250, 0, 0, 0, 0, 0)),\n"
            "                   ('bpf', lambda: libc.syscall(321, 0, 0, 0)),\n"
            "                   ('clone newpid', lambda: libc.syscall(56, 0x20000000 | 17, 0, 0, 0, 0))):\n"
            "    ctypes.set_errno(0)\n    r = call()\n    out[name] = (r, ctypes.get_errno())\n"
            "pid = os.fork()\nif pid == 0:\n    os._exit(7)\nout['fork'] = os.waitpid(pid, 0)[1] >> 8\nout")
    out = _value(server, sid, code)
    for name in ("ptrace", "unshare", "mount", "keyctl", "bpf", "clone newpid"):
        assert out[name] == (-1, 1), (name, out[name])  # EPERM
    assert out["fork"] == 7


@needs_strict
def test_a_strict_session_cannot_reach_the_server_or_another_session(make_server):
    server = make_server()
    other = server.create()
    server.eval(other, "secret = 42")
    (other_pid,) = [s["pid"] for s in server.call("session/list")["sessions"] if s["session"] == other]
    sid = server.create(isolation="strict")
    code = ("import os, signal\nout = []\nfor pid in (%d, %d):\n    try:\n        os.kill(pid, signal.SIGSTOP); out.append('sent')\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\n"
            "    try:\n        open(f'/proc/{pid}/environ', 'rb').read(); out.append('read')\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\nout") % (server.proc.pid, other_pid)
    assert _value(server, sid, code) == ["ProcessLookupError", "FileNotFoundError"] * 2
    assert server.eval(other, "secret")["value"]["repr"] == "42"


@needs_strict
def test_what_an_adversarial_review_found_stays_closed(make_server):
    server = make_server(env={"CELLBOX_TEST_SECRET_OUTSIDE": "x", "SECRET_TOKEN": "hunter2"})
    a, b = server.create(isolation="strict"), server.create(isolation="strict")
    uids = set()
    for sid in (a, b):
        (pid,) = [s["pid"] for s in server.call("session/list")["sessions"] if s["session"] == sid]
        with open(f"/proc/{pid}/status") as f:
            uids.add(next(line.split()[1] for line in f if line.startswith("Uid:")))
    assert len(uids) == 2  # an id of its own each
    code = ("import os, ctypes\nout = {}\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "out['shm'] = libc.shmget(0x7357, 1 << 20, 0o1000 | 0o666) >= 0\n"
            "try:\n    open('/dev/tty'); out['tty'] = 'opened'\nexcept OSError as e:\n    out['tty'] = type(e).__name__\n"
            "out['run'] = os.listdir('/run')\n"
            "out['secret'] = 'SECRET_TOKEN' in os.environ or b'hunter2' in open('/proc/self/environ', 'rb').read()\nout")
    out = _value(server, a, code)
    assert out["shm"] is True and out["tty"] == "OSError" and out["run"] == [], out
    assert out["secret"] is False
    server.call("session/close", {"session": a})
    with open("/proc/sysvipc/shm") as f:  # its IPC namespace died with it
        assert "29527" not in [line.split()[0] for line in f.read().splitlines()[1:]]  # 0x7357
