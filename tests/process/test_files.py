"""Work directories and ``session/writeFile``, ``readFile``, ``listFiles``, through the real server."""

from __future__ import annotations

import base64
import os

import pytest

from tests.harness import RpcError


def test_a_fresh_work_directory_is_the_cwd_and_goes_with_the_session(server):
    created = server.call("session/create", {}, timeout=30)
    sid, workdir = created["session"], created["workdir"]
    assert os.path.isdir(workdir)
    assert server.eval(sid, "import os; os.getcwd()")["value"]["repr"] == repr(workdir)
    (listed,) = server.call("session/list")["sessions"]
    assert listed["workdir"] == workdir
    server.call("session/restart", {"session": sid}, timeout=30)  # a restart keeps it
    assert os.path.isdir(workdir)
    server.call("session/close", {"session": sid})
    assert not os.path.exists(workdir)


def test_keep_workdir_and_an_existing_cwd_are_kept(server, tmp_path):
    kept = server.call("session/create", {"keepWorkdir": True}, timeout=30)
    given = server.call("session/create", {"cwd": str(tmp_path)}, timeout=30)
    assert given["workdir"] == str(tmp_path)
    for created in (kept, given):
        server.call("session/close", {"session": created["session"]})
        assert os.path.isdir(created["workdir"])
    os.rmdir(kept["workdir"])


def test_files_round_trip_while_a_cell_runs(server):
    sid = server.create()
    rid = server.start(sid, "import os, time\nprint('ready', flush=True)\nwhile not os.path.exists('go'): time.sleep(0.01)\n"
                            "open('go').read()")
    assert server.call("session/writeFile", {"session": sid, "path": "go", "text": "héllo"}) == {"path": "go", "size": 6}
    assert server.reply(rid, 20)["result"]["value"]["repr"] == "'héllo'"
    raw = bytes(range(256))
    server.call("session/writeFile", {"session": sid, "path": "sub/dir/raw.bin",
                                      "base64": base64.b64encode(raw).decode(), "mode": 0o600})
    got = server.call("session/readFile", {"session": sid, "path": "sub/dir/raw.bin"})
    assert got["text"] is None and base64.b64decode(got["base64"]) == raw and got["truncated"] is False
    assert server.eval(sid, "oct(os.stat('sub/dir/raw.bin').st_mode & 0o777)")["value"]["repr"] == "'0o600'"
    part = server.call("session/readFile", {"session": sid, "path": "go", "maxBytes": 1})
    assert (part["text"], part["size"], part["truncated"]) == ("h", 6, True)
    entries = server.call("session/listFiles", {"session": sid})["entries"]
    assert [(e["path"], e["kind"]) for e in entries] == [("go", "file"), ("sub", "dir")]
    deeper = server.call("session/listFiles", {"session": sid, "path": "sub/dir"})["entries"]
    assert [(e["path"], e["size"]) for e in deeper] == [("sub/dir/raw.bin", 256)]


@pytest.mark.parametrize("path, why", [
    ("../escape", "'..'"),
    ("/etc/passwd", "absolute"),
    ("out/passwd", "outside the work directory"),
    ("", "empty"),
])
def test_paths_outside_the_work_directory_are_refused(server, path, why):
    sid = server.create()
    server.eval(sid, "import os; os.symlink('/etc', 'out')")
    for method, extra in (("session/readFile", {}), ("session/writeFile", {"text": "x"})):
        with pytest.raises(RpcError) as info:
            server.call(method, {"session": sid, "path": path, **extra})
        assert info.value.code == -32602 and why in info.value.error["data"], info.value.error
    assert server.eval(sid, "os.path.exists('/etc/passwd')")["value"]["repr"] == "True"  # untouched


def test_bad_requests_get_clear_errors(server):
    sid = server.create()
    with pytest.raises(RpcError) as info:
        server.call("session/writeFile", {"session": sid, "path": "a", "text": "x", "base64": "eA=="})
    assert info.value.code == -32602 and "exactly one" in info.value.error["data"]
    with pytest.raises(RpcError) as info:
        server.call("session/writeFile", {"session": sid, "path": "a", "base64": "not base64!"})
    assert info.value.code == -32602
    with pytest.raises(RpcError) as info:
        server.call("session/readFile", {"session": sid, "path": "missing"})
    assert info.value.code == -32602 and "No such file" in info.value.error["data"]
    with pytest.raises(RpcError) as info:
        server.call("session/listFiles", {"session": "nope"})
    assert info.value.code == -32010


@pytest.mark.timeout(30)
def test_a_fifo_never_blocks_the_server(server):
    sid = server.create()
    server.eval(sid, "import os; os.mkfifo('pipe')")
    for method, extra in (("session/readFile", {}), ("session/writeFile", {"text": "x"})):
        with pytest.raises(RpcError) as info:
            server.call(method, {"session": sid, "path": "pipe", **extra})
        assert info.value.code == -32602 and "not a regular file" in info.value.error["data"]
    kinds = {e["path"]: e["kind"] for e in server.call("session/listFiles", {"session": sid})["entries"]}
    assert kinds == {"pipe": "other"}


@pytest.mark.timeout(60)
def test_a_cell_that_moves_its_work_directory_cannot_redirect_the_file_methods(server, tmp_path):
    created = server.call("session/create", {}, timeout=30)
    sid, workdir = created["session"], created["workdir"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server.eval(sid, f"import os\nw = os.getcwd()\nos.rename(w, w + '.moved')\nos.symlink({str(elsewhere)!r}, w)")
    server.call("session/writeFile", {"session": sid, "path": "pwn", "text": "x"})
    assert not (elsewhere / "pwn").exists()  # it went to the directory itself, wherever it is
    assert os.path.exists(workdir + ".moved/pwn")
    server.call("session/close", {"session": sid})
    assert not os.path.lexists(workdir) and not os.path.exists(workdir + ".moved")
    assert elsewhere.is_dir()


def test_names_with_nul_bytes_and_bad_modes_are_invalid_params(server):
    sid = server.create()
    for method, params in (("session/readFile", {"path": "a\u0000b"}),
                           ("session/writeFile", {"path": "a\u0000b", "text": "x"}),
                           ("session/listFiles", {"path": "a\u0000b"}),
                           ("session/writeFile", {"path": "a", "text": "x", "mode": 2 ** 40})):
        with pytest.raises(RpcError) as info:
            server.call(method, {"session": sid, **params})
        assert info.value.code == -32602, (method, info.value.error)


@pytest.mark.timeout(60)
def test_a_huge_directory_is_listed_in_part_without_stalling_other_sessions(server):
    sid, other = server.create(), server.create()
    server.eval(sid, "import os\nos.mkdir('many')\nfor i in range(12_000):\n    open(f'many/{i}', 'w').close()", wait=60)
    rid = server.send("session/listFiles", {"session": sid, "path": "many"})
    assert server.eval(other, "1 + 1")["value"]["repr"] == "2"
    listed = server.reply(rid, 30)["result"]
    assert listed["truncated"] is True and len(listed["entries"]) == 10_000


def test_a_hard_link_is_never_written_through(server, tmp_path):
    sid = server.create()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    server.eval(sid, f"import os; os.link({str(outside)!r}, 'alias')")
    with pytest.raises(RpcError) as info:
        server.call("session/writeFile", {"session": sid, "path": "alias", "text": "changed"})
    assert info.value.code == -32602 and "hard links" in info.value.error["data"]
    assert outside.read_text() == "keep me"
