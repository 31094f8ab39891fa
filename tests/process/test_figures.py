"""Matplotlib figures reach clients as image/png displays (and MCP image content)."""

import base64

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the test extra; install it with pip install -e '.[test]'")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(result):
    return [base64.b64decode(d["data"]["image/png"]) for d in result["displays"] if "image/png" in d["data"]]


def test_show_sends_the_figure(server):
    sid = server.create()
    r = server.eval(sid, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n'after'", wait=60)
    assert r["status"] == "ok" and r["value"]["repr"] == "'after'"
    (png,) = _pngs(r)
    assert png.startswith(PNG_MAGIC)
    assert server.eval(sid, "len(plt.get_fignums())")["value"]["repr"] == "0"


def test_figures_left_open_are_shown_when_the_cell_ends(server):
    sid = server.create()
    r = server.eval(sid, "import matplotlib.pyplot as plt\nplt.figure()\nplt.bar([1, 2], [3, 4])\nplt.figure()\nplt.plot([0, 1]);", wait=60)
    assert len(_pngs(r)) == 2
    assert server.eval(sid, "1")["displays"] == []  # shown once, then closed


def test_a_backend_the_user_chose_is_kept(server):
    sid = server.create(env={"MPLBACKEND": "agg"})
    r = server.eval(sid, "import matplotlib\nimport matplotlib.pyplot as plt\nplt.plot([1])\nmatplotlib.get_backend()", wait=60)
    assert r["value"]["repr"] == "'agg'" and r["displays"] == []


def test_subprocesses_are_not_affected(server):
    sid = server.create()
    code = (
        "import matplotlib, subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import matplotlib; print(matplotlib.get_backend())'],"
        " capture_output=True, text=True).stdout.strip()"
    )
    assert server.eval(sid, code, wait=60)["value"]["repr"] == "'agg'"


def test_mcp_tool_returns_the_figure_as_image_content(server):
    reply = server.call(
        "tools/call",
        {"name": "python", "arguments": {"code": "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()"}},
        timeout=60,
    )
    images = [c for c in reply["content"] if c["type"] == "image"]
    assert reply["isError"] is False and len(images) == 1
    assert images[0]["mimeType"] == "image/png" and base64.b64decode(images[0]["data"]).startswith(PNG_MAGIC)
