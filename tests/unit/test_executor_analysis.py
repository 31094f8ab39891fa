"""Blocking-I/O detection in async code: aliases, attribute chains, policy, counters."""

from __future__ import annotations

import ast

import pytest

from cellbox.child import analysis
from cellbox.protocol.messages import DetectionPolicy
from tests.unit.executor_harness import h, make_harness  # noqa: F401 - fixtures


def names(done):
    return [(w.name, w.line) for w in done.warnings]


def test_time_sleep_in_async_def(h):
    done = h.ok("import time\nasync def f():\n    time.sleep(1)")
    assert names(done) == [("time.sleep", 3)]
    w = done.warnings[0]
    assert w.kind == "blocking-call"
    assert "asyncio.sleep" in w.message


def test_blocking_call_in_awaiting_cell(h):
    done = h.ok("import asyncio, time\nawait asyncio.sleep(0)\ntime.sleep(0)")
    assert names(done) == [("time.sleep", 3)]


def test_sync_cell_top_level_not_flagged(h):
    assert h.ok("import time\ntime.sleep(0)").warnings == []


def test_sync_def_not_flagged(h):
    assert h.ok("import time\ndef f():\n    time.sleep(1)").warnings == []


def test_nested_sync_def_and_lambda_in_async_def_not_flagged(h):
    code = ("import time, asyncio\nasync def f():\n    def inner():\n        time.sleep(1)\n"
            "    await asyncio.to_thread(lambda: time.sleep(1))")
    assert h.ok(code).warnings == []


def test_passing_function_to_thread_not_flagged(h):
    code = ("import time, asyncio\nasync def f():\n    await asyncio.to_thread(time.sleep, 1)\n"
            "    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 1)")
    assert h.ok(code).warnings == []


def test_import_as_alias(h):
    assert names(h.ok("import time as t\nasync def f():\n    t.sleep(1)")) == [("time.sleep", 3)]


def test_from_import_as_alias(h):
    done = h.ok("from time import sleep as zz\nasync def f():\n    zz(1)")
    assert names(done) == [("time.sleep", 3)]


def test_alias_from_earlier_cell(h):
    h.ok("import time as tt")
    h.ok("from time import sleep as snooze")
    done = h.ok("async def f():\n    tt.sleep(1)\n    snooze(1)")
    assert names(done) == [("time.sleep", 2), ("time.sleep", 3)]


def test_local_import_inside_async_def(h):
    done = h.ok("async def f():\n    import requests as rq\n    rq.get('http://x')")
    assert names(done) == [("requests.get", 3)]


def test_urllib_request_chain(h):
    done = h.ok("import urllib.request\nasync def f():\n    urllib.request.urlopen('http://x')")
    assert names(done) == [("urllib.request.urlopen", 3)]


def test_from_urllib_request_import(h):
    done = h.ok("from urllib.request import urlopen\nasync def f():\n    urlopen('u')")
    assert names(done) == [("urllib.request.urlopen", 3)]


@pytest.mark.parametrize("call, name", [
    ("subprocess.run(['ls'])", "subprocess.run"),
    ("socket.create_connection(('h', 1))", "socket.create_connection"),
    ("socket.socket()", "socket.socket"),
    ("os.system('ls')", "os.system"),
    ("open('f')", "open"),
])
def test_known_blocking_calls(h, call, name):
    done = h.ok(f"import subprocess, socket, os\nasync def f():\n    {call}")
    assert names(done) == [(name, 3)]


def test_subprocess_advice(h):
    done = h.ok("import subprocess\nasync def f():\n    subprocess.check_output(['ls'])")
    assert "create_subprocess_exec" in done.warnings[0].message


@pytest.mark.parametrize("body", [
    "Path('x').read_text()",
    "p = Path('x')\n    p.write_text('y')",
    "(Path('a') / 'b').read_bytes()",
    "Path.home().joinpath('x').write_bytes(b'')",
    "p = Path('x')\n    p.parent.read_text()",
])
def test_pathlib_methods(h, body):
    done = h.ok(f"from pathlib import Path\nasync def f():\n    {body}")
    assert len(done.warnings) == 1
    assert done.warnings[0].name.startswith("pathlib.Path.")


def test_pathlib_object_from_namespace(h):
    h.ok("import pathlib\ndata = pathlib.Path('data.txt')")
    done = h.ok("async def f():\n    data.read_text()")
    assert names(done) == [("pathlib.Path.read_text", 2)]


def test_awaited_calls_never_flagged(h):
    done = h.ok("import asyncio\nasync def f(session):\n    await session.get('u')\n"
                "    await asyncio.sleep(1)")
    assert done.warnings == []
    assert done.counters == {}


def test_local_rebinding_shadows_module(h):
    done = h.ok("import time\nclass Fake:\n    def sleep(self, s): pass\n"
                "async def f():\n    time = Fake()\n    time.sleep(1)")
    assert done.warnings == []


def test_dedupe_same_name_same_line(h):
    done = h.ok("import time\nasync def f():\n    time.sleep(1); time.sleep(2)")
    assert names(done) == [("time.sleep", 3)]


def test_class_body_in_awaiting_cell_is_scanned(h):
    done = h.ok("import asyncio, time\nawait asyncio.sleep(0)\nclass K:\n    time.sleep(0)")
    assert names(done) == [("time.sleep", 4)]


def test_rewritten_def_is_scanned(h):
    done = h.ok("import asyncio, time\ndef f():\n    time.sleep(1)\n    await asyncio.sleep(0)")
    assert names(done) == [("time.sleep", 3)]


def test_resolution_uses_current_aliases_with_cached_cell(h):
    code = "async def f():\n    zz(1)"
    assert h.ok(code).warnings == []
    h.ok("from time import sleep as zz")
    assert names(h.ok(code)) == [("time.sleep", 2)]


def test_warnings_reported_even_if_cell_fails(h):
    done = h.run("import time\nasync def f():\n    time.sleep(1)\n1/0")
    assert done.error.type == "ZeroDivisionError"
    assert names(done) == [("time.sleep", 3)]


# --- policy -----------------------------------------------------------------------------------

def test_policy_disabled(make_harness):
    harness = make_harness(detection=DetectionPolicy(enabled=False))
    done = harness.ok("import subprocess, time\nasync def f():\n    time.sleep(1)")
    assert done.warnings == [] and done.counters == {}
    assert harness.ex.counters == dict.fromkeys(analysis.COUNTERS, 0)


def test_policy_extra_modules(make_harness):
    harness = make_harness(detection=DetectionPolicy(extra_modules=["mylib"]))
    done = harness.ok("async def f():\n    import mylib\n    mylib.fetch()")
    assert names(done) == [("mylib.fetch", 3)]


def test_policy_extra_names(make_harness):
    harness = make_harness(detection=DetectionPolicy(extra_names=["json.load"]))
    done = harness.ok("import json\nasync def f(fp):\n    json.load(fp)\n    json.loads('1')")
    assert names(done) == [("json.load", 3)]


def test_policy_ignored_names(make_harness):
    harness = make_harness(detection=DetectionPolicy(ignored_names=["time.sleep", "subprocess"]))
    done = harness.ok("import time, subprocess, os\nasync def f():\n    time.sleep(1)\n"
                      "    subprocess.run([])\n    os.system('x')")
    assert names(done) == [("os.system", 5)]


# --- counters ---------------------------------------------------------------------------------

def test_counters_blocking_call(h):
    done = h.ok("import time\nasync def f():\n    time.sleep(1)\n    time.sleep(2)")
    assert done.counters == {"detected_blocking_call": 2}
    h.ok("import time\nasync def g():\n    time.sleep(1)")
    assert h.ex.counters["detected_blocking_call"] == 3


def test_counters_blocking_import(h):
    done = h.ok("import subprocess\nfrom time import sleep\nimport json")
    assert done.counters == {"detected_blocking_import": 2}
    assert h.ex.counters["detected_blocking_import"] == 2


def test_counters_missed_attribute_chain(h):
    done = h.ok("async def f(conn, s):\n    conn.recv(10)\n    s.sleep(1)\n    s.append(1)")
    assert done.counters == {"missed_attribute_chain": 2}
    assert done.warnings == []


def test_counters_dict_has_all_names(h):
    assert set(h.ex.counters) == set(analysis.COUNTERS)


# --- units ------------------------------------------------------------------------------------

def test_scan_sync_cell_without_async_has_no_scopes():
    src = "import time\ntime.sleep(1)"
    facts = analysis.scan(ast.parse(src), False, src)
    assert facts.scopes == []
    assert facts.imports == [("time", "time", "time")]


def test_scan_bindings():
    src = "import urllib.request\nimport os.path as osp\nfrom a.b import c as d\nfrom . import x"
    facts = analysis.scan(ast.parse(src), False, src)
    assert facts.imports == [("urllib", "urllib", "urllib.request"),
                             ("osp", "os.path", "os.path"), ("d", "a.b.c", "a.b.c")]


def test_is_blocking_unit():
    det = analysis.Detector(DetectionPolicy(extra_modules=["boto3"], ignored_names=["requests"]))
    assert det.is_blocking("boto3.client")
    assert not det.is_blocking("requests.get")
    assert det.is_blocking("subprocess", prefix_ok=True)
    assert not det.is_blocking("subprocess")
    assert not det.is_blocking("asyncio.sleep")
