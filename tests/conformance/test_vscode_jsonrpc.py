"""The real ``vscode-jsonrpc`` npm client (VS Code's JSON-RPC library) drives ``cellbox serve``.

``node/client.js`` spawns ``python -m cellbox serve``, talks Content-Length framing over the
child's stdio with ``StreamMessageReader``/``StreamMessageWriter``, runs the lifecycle, an eval
with streamed output, the editor methods, a cancellation through a ``CancellationToken``
(``$/cancelRequest``) and ``shutdown``/``exit``, and prints a JSON report that the tests below
check. The npm package is installed on first use (``npm install`` in ``node/`` when
``node_modules`` lacks it); without ``node`` or ``npm`` the tests are skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from tests.harness import ROOT

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


@pytest.fixture(scope="session")
def node_client() -> list[str]:
    """The command that runs the driver, after installing its npm dependency if needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the vscode-jsonrpc conformance test")
    marker = os.path.join(NODE_DIR, "node_modules", "vscode-jsonrpc", "package.json")
    # xdist workers share the directory: one installs, the others wait for it
    lock_name = "cellbox-npm-" + hashlib.sha1(NODE_DIR.encode()).hexdigest()[:12] + ".lock"
    with open(os.path.join(tempfile.gettempdir(), lock_name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(marker):
            done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=False,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0 or not os.path.exists(marker):
                pytest.fail(f"npm install failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return [node, os.path.join(NODE_DIR, "client.js"), sys.executable, ROOT]


@pytest.fixture(scope="module")
def report(node_client) -> dict[str, Any]:
    done = subprocess.run(node_client, check=False, capture_output=True, text=True, timeout=50)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    assert lines, f"no report from the driver: {done.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert done.returncode == 0 and "fatal" not in report, (report.get("fatal"), report.get("stderr"))
    return report


def _step(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in report["steps"] if s["step"] == name]
    assert len(found) == 1, (name, report["steps"])
    return found[0]


def _result(report: dict[str, Any], name: str) -> Any:
    step = _step(report, name)
    assert "error" not in step, step
    return step["result"]


pytestmark = pytest.mark.timeout(120)  # a first run installs the npm package


def test_initialize_over_content_length(report):
    init = _result(report, "initialize")
    assert init["serverInfo"]["name"] == "cellbox"
    assert init["capabilities"]["cellbox"]["framing"] == "lsp"
    assert {"session/complete", "session/inspect", "session/isComplete"} <= set(init["capabilities"]["cellbox"]["methods"])
    assert not [s for s in report["steps"] if s["step"] == "connectionError"]


def test_eval_streams_output_notifications(report):
    created = _result(report, "session/create")
    result = _result(report, "session/eval")
    assert result["status"] == "ok" and result["value"]["repr"] == "42"
    outputs = [n["params"] for n in report["notifications"] if n["method"] == "session/output"]
    mine = [o for o in outputs if o["text"] in ("hello from vscode\n", "to stderr\n")]
    assert [(o["stream"], o["text"]) for o in mine] == [("stdout", "hello from vscode\n"), ("stderr", "to stderr\n")]
    assert {o["session"] for o in mine} == {created["session"]}
    assert len({o["requestId"] for o in mine}) == 1
    # the notifications arrived before the eval's result
    assert report["notificationsBeforeEvalResult"] >= 2


def test_editor_methods(report):
    assert _result(report, "session/complete") == {"matches": ["'alpha'", "'alpine'"], "cursorStart": 5, "cursorEnd": 8}
    inspected = _result(report, "session/inspect")
    assert inspected["found"] is True
    assert inspected["data"]["text/plain"].startswith("Signature: len(obj, /)")
    assert _result(report, "session/isComplete") == {"status": "incomplete", "indent": "    "}
    assert _step(report, "unknownSession")["error"]["code"] == -32010


def test_cancellation_token_interrupts_eval(report):
    result = _result(report, "cancelledEval")
    assert result["status"] == "interrupted"
    assert result["stateLost"] is False and result["cause"] == "interrupt"
    after = _result(report, "evalAfterCancel")
    assert after["status"] == "ok" and after["value"]["repr"] == "2"


def test_shutdown_and_exit(report):
    assert _result(report, "shutdown") is None
    assert report["exit"] == {"code": 0, "signal": None}
