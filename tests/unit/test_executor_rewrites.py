"""Fallback rewrites: def -> async def, awaiting zero-argument lambda -> async helper."""

from __future__ import annotations

import ast

from cellbox.child import rewrite
from tests.unit.executor_harness import h  # noqa: F401 - fixture

PRE = "import asyncio, inspect\n"


def test_def_that_awaits_becomes_async(h):
    h.ok(PRE)
    assert h.value("def f():\n    await asyncio.sleep(0)\n    return 1\nawait f()") == "1"
    assert h.value("inspect.iscoroutinefunction(f)") == "True"


def test_method_that_awaits_becomes_async(h):
    h.ok(PRE)
    code = "class A:\n    def m(self):\n        return await asyncio.sleep(0, 2)\nawait A().m()"
    assert h.value(code) == "2"


def test_only_defs_whose_own_body_awaits(h):
    h.ok(PRE)
    h.ok("def outer():\n    def inner():\n        await asyncio.sleep(0)\n    return inner")
    assert h.value("inspect.iscoroutinefunction(outer), "
                   "inspect.iscoroutinefunction(outer())") == "(False, True)"


def test_await_in_nested_lambda_does_not_make_def_async(h):
    h.ok(PRE)
    h.ok("def make():\n    return lambda: await asyncio.sleep(0, 3)")
    assert h.value("inspect.iscoroutinefunction(make)") == "False"
    assert h.value("await make()()") == "3"


def test_zero_arg_lambda_becomes_async_helper(h):
    h.ok(PRE)
    assert h.value("get = lambda: await asyncio.sleep(0, 4)\nawait get()") == "4"
    assert not [k for k in h.ex.namespace if k.startswith(rewrite.HELPER_PREFIX)]


def test_lambda_as_last_expression(h):
    h.ok(PRE)
    done = h.ok("(lambda: await asyncio.sleep(0, 5))")
    assert done.value.type == "function"
    assert h.value("await _()") == "5"


def test_lambda_in_class_body_leaves_no_helper_attribute(h):
    h.ok(PRE)
    h.ok("class K:\n    f = staticmethod(lambda: await asyncio.sleep(0, 9))")
    assert h.value("await K.f()") == "9"
    assert h.value("[n for n in vars(K) if 'cellbox' in n]") == "[]"


def test_lambda_in_loop_body(h):
    h.ok(PRE)
    code = ("fs = []\nfor i in range(2):\n    fs.append(lambda: await asyncio.sleep(0, 'x'))\n"
            "[await g() for g in fs]")
    assert h.value(code) == "['x', 'x']"


def test_lambda_with_arguments_is_not_rewritten(h):
    h.ok(PRE)
    done = h.error("f = lambda x: await asyncio.sleep(0, x)")
    assert done.error.type == "SyntaxError"
    assert done.error.message == "'await' outside async function (line 1, column 15)"
    assert "f = lambda x: await asyncio.sleep(0, x)" in done.error.traceback


def test_lambda_inside_comprehension_is_not_rewritten(h):
    h.ok(PRE)
    done = h.error("fs = [lambda: await asyncio.sleep(0, i) for i in range(2)]")
    assert done.error.type == "SyntaxError"


def test_other_async_errors_are_not_rewritten(h):
    done = h.error("def f():\n    async with x:\n        pass")
    assert done.error.message == "'async with' outside async function (line 2, column 5)"
    assert "f" not in h.ex.namespace


def test_rewrite_keeps_line_numbers(h):
    h.ok(PRE)
    tb = h.error("def f():\n    await asyncio.sleep(0)\n    1/0\nawait f()").error.traceback
    assert '"<cell 2>", line 4, in <module>\n    await f()' in tb
    assert '"<cell 2>", line 3, in f\n    1/0' in tb


def test_lambda_helper_keeps_line_numbers(h):
    h.ok(PRE + "async def boom():\n    raise ValueError('b')")
    tb = h.error("x = 1\ng = lambda: await boom()\nawait g()").error.traceback
    assert '"<cell 2>", line 2, in ' in tb and "g = lambda: await boom()" in tb


def test_global_and_augmented_assignment_in_rewritten_cell(h):
    h.ok(PRE)
    code = ("counter = 0\ndef inc():\n    global counter\n    await asyncio.sleep(0)\n"
            "    counter += 1\nawait inc()\nawait inc()\ncounter += 10\ncounter")
    assert h.value(code) == "12"


def test_del_in_rewritten_cell(h):
    h.ok(PRE)
    code = "z = 1\ndef f():\n    await asyncio.sleep(0)\ndel z\n'z' in globals()"
    assert h.value(code) == "False"


def test_decorators_kept(h):
    h.ok(PRE + "def tag(fn):\n    fn.tagged = True\n    return fn")
    assert h.value("@tag\ndef f():\n    await asyncio.sleep(0)\nf.tagged") == "True"


def test_rewritten_cell_from_cache(h):
    h.ok(PRE)
    code = "def f():\n    return await asyncio.sleep(0, 'c')\nawait f()"
    assert h.value(code) == "'c'"
    assert h.value(code) == "'c'"


def test_plain_code_is_not_rewritten(h):
    h.ok("def f():\n    return 1")
    assert h.value("import inspect\ninspect.iscoroutinefunction(f)") == "False"


def test_make_async_unit():
    tree = ast.parse("def f():\n    return 1\ng = lambda: 2")
    assert rewrite.make_async(tree) is False
    tree = ast.parse("def f():\n    await x\ng = lambda: await y")
    assert rewrite.make_async(tree) is True
    kinds = [type(s).__name__ for s in tree.body]
    assert kinds == ["AsyncFunctionDef", "AsyncFunctionDef", "Assign"]
    assert tree.body[1].lineno == 3


def test_awaits_unit():
    def own(src):
        return rewrite.awaits(ast.parse(src).body)

    assert own("await x")
    assert own("async for a in b: pass")
    assert own("[await a for a in b]")
    assert not own("(await a for a in b)")
    assert not own("def g():\n    await x")
    assert own("@deco(await x)\ndef g(): pass")
    assert not own("lambda: await x")
    assert own("lambda v=await x: v")
