"""Output streaming, C-level and subprocess output, caps, displays, input."""

import re

import pytest


def test_output_streams_in_order_with_request_id(server):
    sid = server.create()
    rid = server.send("session/eval", {"session": sid, "code": "for i in range(5): print(i)"})
    r = server.reply(rid)["result"]
    assert r["stdout"] == "0\n1\n2\n3\n4\n"
    assert server.outputs(rid) == "0\n1\n2\n3\n4\n"
    notes = [n for n in server.notifications if n.get("method") == "session/output"]
    assert all(n["params"]["session"] == sid for n in notes)
    # every notification for this eval precedes its reply
    assert server.raw.index(server.replies[("int", rid)]) > max(server.raw.index(n) for n in notes)


def test_stderr_and_fd_level_and_subprocess(server):
    sid = server.create()
    code = (
        "import sys, os, subprocess\n"
        "print('a')\n"
        "sys.stderr.write('b\\n')\n"
        "os.write(1, b'c\\n')\n"
        "subprocess.run(['echo', 'd'])\n"
        "subprocess.run(['sh', '-c', 'echo e >&2'])\n"
    )
    r = server.eval(sid, code)
    assert r["stdout"] == "a\nc\nd\n" and r["stderr"] == "b\ne\n"


def test_write_returns_count_and_unicode(server):
    sid = server.create()
    r = server.eval(sid, "import sys\nn = sys.stdout.write('héllo ☃\\n')\nn")
    assert r["value"]["repr"] == "8" and r["stdout"] == "héllo ☃\n"


def test_output_cap_head_tail_marker(make_server):
    s = make_server("--output-bytes", "1000")
    sid = s.create()
    rid = s.send("session/eval", {"session": sid, "code": "for i in range(1000): print(f'{i:04d}')"})
    r = s.reply(rid)["result"]
    out = r["stdout"]
    assert out.startswith("0000\n0001\n")
    assert out.endswith("0998\n0999\n")
    assert r["truncated"]["stdout"] == 5000 - 1000
    assert "4000 bytes" in out
    marker_len = len(out) - 1000
    assert 0 < marker_len < 100
    assert s.outputs(rid) == out


@pytest.mark.parametrize(
    "text, count, limit, stream",
    [
        ("x", 10_000, 1001, "stdout"),
        ("ab\n", 3_333, 1001, "stderr"),
        ("é", 5_001, 1001, "stdout"),  # the tail would start inside a character
        ("€☃", 2_000, 1003, "stdout"),  # the same, with 3-byte characters
        ("€☃", 2_000, 1001, "stdout"),
    ],
    ids=["ascii", "lines-stderr", "2-byte", "3-byte", "head-cut-in-a-character"],
)
def test_truncated_counts_exactly_the_dropped_bytes(make_server, text, count, limit, stream):
    """Bytes shown (head + tail) plus ``truncated`` is exactly what the cell wrote, also when
    the kept tail would start inside a multi-byte character; the marker names the same number,
    and what is shown is whole characters of what was written."""
    s = make_server("--output-bytes", str(limit))
    sid = s.create()
    written = text * count
    total = len(written.encode())
    rid = s.send("session/eval", {"session": sid, "code": f"import sys\nsys.{stream}.write({text!r} * {count})"})
    r = s.reply(rid)["result"]
    shown, dropped = r[stream], r["truncated"][stream]
    (marker,) = re.findall(r"\n\[cellbox: (\d+) bytes of output dropped here\]\n", shown)
    head, tail = shown.split(f"\n[cellbox: {marker} bytes of output dropped here]\n")
    assert int(marker) == dropped
    assert head == written[: len(head)] and tail == written[len(written) - len(tail) :]
    assert len(head.encode()) + len(tail.encode()) + dropped == total
    assert total - limit <= dropped <= total - limit + 3  # at most a split character more
    assert s.outputs(rid, stream) == shown  # the notifications carried exactly the same


def test_huge_output_never_blocks(server):
    sid = server.create()
    r = server.eval(sid, "import sys\nfor _ in range(200): sys.stdout.write('x' * 50000)\n'done'", wait=60)
    assert r["status"] == "ok" and r["value"]["repr"] == "'done'"
    assert r["truncated"]["stdout"] == 200 * 50000 - (1 << 20)


def test_collect_output_false(server):
    sid = server.create()
    rid = server.send("session/eval", {"session": sid, "code": "print('x')", "collectOutput": False})
    r = server.reply(rid)["result"]
    assert r["stdout"] is None and r["stderr"] is None and r["displays"] is None
    assert server.outputs(rid) == "x\n"


def test_silent(server):
    sid = server.create()
    assert [server.eval(sid, code)["executionCount"] for code in ("1", "2")] == [1, 2]
    r = server.eval(sid, "41 + 1", silent=True)
    assert r["value"] is None and r["executionCount"] == 2  # unchanged, reported as it stands
    r = server.eval(sid, "_")
    assert r["value"]["repr"] == "2" and r["executionCount"] == 3


def test_display_notification(server):
    sid = server.create()
    code = "class H:\n    def _repr_html_(self): return '<b>hi</b>'\ndisplay(H())"
    rid = server.send("session/eval", {"session": sid, "code": code})
    r = server.reply(rid)["result"]
    assert r["displays"][0]["data"]["text/html"] == "<b>hi</b>"
    notes = [n for n in server.notifications if n.get("method") == "session/display"]
    assert notes and notes[0]["params"]["requestId"] == rid and notes[0]["params"]["session"] == sid


def test_value_mime_bundle(server):
    sid = server.create()
    r = server.eval(sid, "class H:\n    def _repr_html_(self): return '<i>x</i>'\n    def __repr__(self): return 'H()'\nH()")
    assert r["value"]["repr"] == "H()" and r["value"]["mime"]["text/html"] == "<i>x</i>"


def test_input_without_stdin_fails_fast(server):
    sid = server.create()
    r = server.eval(sid, "input('name? ')", wait=10)  # never hangs
    assert r["status"] == "error" and r["error"]["type"] == "EOFError"
    assert "stdin" in r["error"]["message"].lower()


def test_input_with_stdin(server):
    sid = server.create()
    rid = server.send("session/eval", {"session": sid, "code": "name = input('name? ')\nname.upper()", "allowStdin": True})
    note = server.wait_for(lambda: next((n for n in server.notifications if n.get("method") == "session/inputRequest"), None))
    assert note["params"]["prompt"] == "name? " and note["params"]["requestId"] == rid
    assert note["params"]["password"] is False
    server.call("session/input", {"session": sid, "requestId": rid, "text": "ada"})
    assert server.reply(rid)["result"]["value"]["repr"] == "'ADA'"


def test_input_interrupted(server):
    sid = server.create()
    rid = server.send("session/eval", {"session": sid, "code": "input()", "allowStdin": True})
    server.wait_for(lambda: any(n.get("method") == "session/inputRequest" for n in server.notifications))
    server.call("session/interrupt", {"session": sid})
    r = server.reply(rid)["result"]
    assert r["status"] == "interrupted" and not r["stateLost"]
    assert server.eval(sid, "1")["value"]["repr"] == "1"


def test_user_code_cannot_corrupt_channel(server):
    sid = server.create()
    code = (
        "import os, sys\n"
        "os.write(1, b'{\"jsonrpc\": \"2.0\", \"id\": 999, \"result\": 1}\\n')\n"
        "os.close(0)\n"
        "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)\n"
        "'fine'"
    )
    r = server.eval(sid, code)
    assert r["value"]["repr"] == "'fine'"
    assert ("int", 999) not in server.replies
    assert server.eval(sid, "1+1")["value"]["repr"] == "2"


def test_closing_stdout_fd_in_child(server):
    sid = server.create()
    r = server.eval(sid, "import os\nos.close(1)\nos.close(2)\nprint('lost')\n'alive'")
    assert r["value"]["repr"] == "'alive'"
    assert server.eval(sid, "3")["value"]["repr"] == "3"


def test_fork_in_cell(server):
    sid = server.create()
    r = server.eval(sid, "import os\npid = os.fork()\nif pid == 0:\n    print('child')\n    os._exit(0)\nos.waitpid(pid, 0)\n'parent'")
    assert r["value"]["repr"] == "'parent'"
    assert server.eval(sid, "1")["value"]["repr"] == "1"


def test_closing_every_descriptor_is_reported_not_hung(server):
    sid = server.create()
    server.eval(sid, "x = 1")
    r = server.eval(sid, "import os\nos.closerange(3, 4096)\n'closed'", timeout=5)
    assert (r["status"], r["cause"], r["stateLost"]) == ("killed", "exit 70", True)
    assert "lost its channel to the supervisor" in r["stderr"]
    assert server.eval(sid, "'x' in globals()")["value"]["repr"] == "False"
