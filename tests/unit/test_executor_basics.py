"""Executor basics: results, `_`, `;`, namespace semantics, __future__ flags, the AST cache."""

from __future__ import annotations

import pytest

from cellbox.child import compiler
from cellbox.child.executor import Executor, cache_size_from_env
from tests.unit.executor_harness import h, make_harness  # noqa: F401 - fixtures


def test_expression_value(h):
    done = h.ok("1 + 1")
    assert done.value.repr == "2"
    assert done.value.type == "int"
    assert done.value.mime == {"text/plain": "2"}
    assert done.execution_count == 1


def test_statements_then_expression(h):
    assert h.value("x = 1; x") == "1"


def test_statement_has_no_value(h):
    assert h.value("y = 2") is None


def test_none_has_no_value(h):
    assert h.value("None") is None


def test_empty_and_comment_only_cells(h):
    assert h.ok("").value is None
    assert h.ok("# nothing here\n").value is None


@pytest.mark.parametrize("code", ["1;", "1;  # comment", "x = 5\nx;", "x = 5\nx ;\n\n# end\n",
                                  "(1,\n 2);"])
def test_trailing_semicolon_suppresses(h, code):
    assert h.value(code) is None


@pytest.mark.parametrize("code, expected", [
    ("'a;'", "'a;'"),
    ("1  # ;", "1"),
    ("x = 1; x", "1"),
    ("'''\n;\n'''", "'\\n;\\n'"),
])
def test_semicolon_in_strings_comments_or_between_statements(h, code, expected):
    assert h.value(code) == expected


def test_underscore_holds_last_value(h):
    h.ok("41 + 1")
    assert h.value("_") == "42"
    h.ok("z = 3")
    assert h.value("_ + 1") == "43"
    h.ok("None")
    assert h.value("_") == "43"


def test_silent_has_no_value_and_keeps_underscore(h):
    h.ok("7")
    done = h.ok("8", silent=True)
    assert done.value is None
    assert h.value("_") == "7"


def test_semicolon_keeps_underscore(h):
    h.ok("7")
    h.ok("9;")
    assert h.value("_") == "7"


def test_names_functions_classes_and_imports_persist(h):
    h.ok("import math\ndef area(r):\n    return math.pi * r * r\nclass P:\n    k = 2")
    assert h.value("round(area(1), 2), P.k") == "(3.14, 2)"


def test_functions_see_later_global_changes(h):
    h.ok("def get():\n    return g")
    h.ok("g = 'first'")
    assert h.value("get()") == "'first'"
    h.ok("g = 'second'")
    assert h.value("get()") == "'second'"


def test_global_statement_in_function(h):
    h.ok("n = 0\ndef inc():\n    global n\n    n += 1")
    h.ok("inc(); inc()")
    assert h.value("n") == "2"


def test_nonlocal(h):
    h.ok("def counter():\n    c = 0\n    def step():\n        nonlocal c\n        c += 1\n"
         "        return c\n    return step\nstep = counter()")
    assert h.value("step(), step()") == "(1, 2)"


def test_del_then_name_error(h):
    h.ok("gone = 1")
    h.ok("del gone")
    done = h.error("gone")
    assert done.error.type == "NameError"
    assert "gone" in done.error.message


def test_walrus_at_top_level_and_in_comprehension(h):
    assert h.value("(w := 5) + 1") == "6"
    assert h.value("w") == "5"
    h.ok("[last := i for i in range(3)]")
    assert h.value("last") == "2"


def test_generator_expression_sees_globals(h):
    h.ok("n = 3")
    assert h.value("sum(i * n for i in range(3))") == "9"


def test_comprehension_sees_globals_inside_function(h):
    h.ok("factor = 10\ndef scaled(xs):\n    return [x * factor for x in xs]")
    assert h.value("scaled([1, 2])") == "[10, 20]"


def test_class_body_and_methods(h):
    h.ok("base = 5\nclass C:\n    v = base + 1\n    def m(self):\n        return self.v * base")
    assert h.value("C().m()") == "30"


def test_decorators(h):
    h.ok("import functools\ndef twice(f):\n    @functools.wraps(f)\n    def w(*a):\n"
         "        return f(*a) * 2\n    return w\n@twice\ndef one():\n    return 1")
    assert h.value("one(), one.__name__") == "(2, 'one')"


def test_dunder_name_is_main(h):
    assert h.value("__name__") == "'__main__'"


def test_classes_get_main_module(h):
    h.ok("class Q: pass")
    assert h.value("Q.__module__") == "'__main__'"


def test_namespace_is_the_given_dict(make_harness):
    ns: dict = {}
    harness = make_harness(namespace=ns)
    harness.ok("x = 5")
    assert ns["x"] == 5
    ns["y"] = 7
    assert harness.value("x + y") == "12"
    assert harness.ex.namespace is ns
    assert ns["__name__"] == "__main__"


def test_if_for_while_try_blocks(h):
    code = ("total = 0\nfor i in range(4):\n    if i % 2:\n        total += i\n"
            "while total < 10:\n    total += 1\ntry:\n    {}['k']\nexcept KeyError:\n"
            "    total += 100\ntotal")
    assert h.value(code) == "110"


def test_match_statement(h):
    assert h.value("match [1, 2]:\n    case [a, b]:\n        r = a + b\nr") == "3"


def test_annotations_at_top_level(h):
    assert h.value("v: int = 1\n__annotations__") == "{'v': <class 'int'>}"


def test_future_annotations_persist_across_cells(h):
    h.ok("from __future__ import annotations")
    assert h.value("def f(x: undefined_name) -> other: pass\nf.__annotations__") == (
        "{'x': 'undefined_name', 'return': 'other'}")


def test_future_flags_are_accumulated_not_replaced(h):
    h.ok("from __future__ import annotations")
    h.ok("from __future__ import barry_as_FLUFL")
    assert h.value("1 <> 2") == "True"
    assert h.value("def f(x: nope): pass\nf.__annotations__") == "{'x': 'nope'}"


def test_future_flags_without_future_import_stay_off(h):
    assert h.value("def f(x: int): pass\nf.__annotations__") == "{'x': <class 'int'>}"


def test_future_import_not_first_is_syntax_error(h):
    done = h.error("x = 1\nfrom __future__ import annotations")
    assert done.error.type == "SyntaxError"


def test_value_type_names(h):
    h.ok("class Widget: pass")
    assert h.ok("Widget()").value.type == "Widget"
    assert h.ok("[1]").value.type == "list"
    assert h.ok("Widget").value.type == "type"


def test_no_engine_names_in_namespace(h):
    h.ok("import asyncio\nx = 1")
    h.ok("await asyncio.sleep(0)")
    h.ok("h1 = lambda: await asyncio.sleep(0)")
    h.ok("1/0" if False else "2")
    allowed = {"__name__", "__doc__", "__package__", "__spec__", "__loader__", "__builtins__",
               "asyncio", "x", "h1", "_"}
    assert set(h.ex.namespace) <= allowed


def test_start_returns_after_sync_cell(h):
    results = []

    async def drive():
        h.ex.start("1 + 2", execution_count=1, on_done=results.append)
        return list(results)

    done_before_return = h.loop.run_until_complete(drive())
    assert [d.value.repr for d in done_before_return] == ["3"]
    assert not h.ex.running


def test_running_flag_and_single_on_done(h):
    results = []

    async def drive():
        h.ex.start("import asyncio\nawait asyncio.sleep(0)\n5", execution_count=1,
                   on_done=results.append)
        assert h.ex.running
        assert results == []
        with pytest.raises(RuntimeError):
            h.ex.start("1", execution_count=2, on_done=results.append)
        while not results:
            await asyncio.sleep(0)

    import asyncio
    h.loop.run_until_complete(drive())
    assert len(results) == 1
    assert results[0].value.repr == "5"
    assert not h.ex.running


def test_done_fields(h):
    done = h.ok("3", cell_id=77, execution_count=9)
    assert done.id == 77
    assert done.execution_count == 9
    assert done.stopped is None
    assert done.fatal is None
    assert done.duration_ms >= 0
    assert done.counters == {}


def test_cache_reuses_compiled_cells_with_right_filename(h):
    h.ok("def f():\n    return 1/0")
    done = h.error("def f():\n    return 1/0\nf()")
    assert 'File "<cell 2>", line 2, in f' in done.error.traceback
    done = h.error("def f():\n    return 1/0\nf()")
    assert 'File "<cell 3>", line 2, in f' in done.error.traceback
    assert "return 1/0" in done.error.traceback


def test_cache_size_zero_disables(make_harness):
    harness = make_harness(ast_cache_size=0)
    harness.ok("1")
    harness.ok("1")
    assert len(harness.ex._compiler.cache) == 0


def test_cache_is_lru(make_harness):
    harness = make_harness(ast_cache_size=2)
    for code in ["1", "2", "3"]:
        harness.ok(code)
    assert len(harness.ex._compiler.cache) == 2


@pytest.mark.parametrize("env, expected", [
    ({}, 256),
    ({"CELLBOX_AST_CACHE_SIZE": "3"}, 3),
    ({"ASYNC_EXECUTOR_AST_CACHE_SIZE": "4"}, 4),
    ({"CELLBOX_AST_CACHE_SIZE": "5", "ASYNC_EXECUTOR_AST_CACHE_SIZE": "4"}, 5),
    ({"CELLBOX_AST_CACHE_SIZE": "0"}, 0),
    ({"CELLBOX_AST_CACHE_SIZE": "junk"}, 256),
])
def test_cache_size_from_env(monkeypatch, env, expected):
    monkeypatch.delenv("CELLBOX_AST_CACHE_SIZE", raising=False)
    monkeypatch.delenv("ASYNC_EXECUTOR_AST_CACHE_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cache_size_from_env() == expected
    assert cache_size_from_env(7) == 7


def test_cache_size_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv("CELLBOX_AST_CACHE_SIZE", "3")
    ex = Executor(emit_stream=lambda n, t: None, emit_display=lambda d: None, ast_cache_size=9)
    assert ex._compiler.cache.size == 9


def test_reused_execution_count_gets_distinct_filename(h):
    h.ok("def first():\n    1/0", execution_count=4)
    h.ok("def second():\n    [][0]", execution_count=4)
    tb1 = h.error("first()").error.traceback
    tb2 = h.error("second()").error.traceback
    assert '"<cell 4>", line 2, in first' in tb1 and "1/0" in tb1
    assert '"<cell 4.2>", line 2, in second' in tb2 and "[][0]" in tb2


def test_inspect_getsource_of_cell_function(h):
    h.ok("def documented():\n    return 'src'")
    assert h.value("import inspect\ninspect.getsource(documented)") == (
        "\"def documented():\\n    return 'src'\\n\"")


def test_ends_with_semicolon_unit():
    assert compiler.ends_with_semicolon("x;")
    assert compiler.ends_with_semicolon("x;  # c\n\n")
    assert not compiler.ends_with_semicolon("x  # ;")
    assert not compiler.ends_with_semicolon("'a;'")
    assert not compiler.ends_with_semicolon("x")
    assert not compiler.ends_with_semicolon("'unterminated;")


def test_a_failure_of_the_executor_itself_is_the_cells_error(h, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("detector bug")

    h.install()
    monkeypatch.setattr(h.ex._detector, "check", broken)
    done = h.run("1")
    assert done.error is not None and done.error.type == "RuntimeError"
    assert not h.ex.running
    monkeypatch.undo()
    assert h.value("2") == "2"  # the session goes on


def test_uninstall_gives_back_stdout_and_the_alarm_handler():
    import signal
    import sys

    before_out, before_alarm = sys.stdout, signal.getsignal(signal.SIGALRM)
    ex = Executor(emit_stream=lambda name, text: None, emit_display=lambda d: None)
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        ex.install()
        assert sys.stdout is not before_out
        ex.uninstall()
        assert sys.stdout is before_out and signal.getsignal(signal.SIGALRM) == before_alarm
    finally:
        loop.close()
        asyncio.set_event_loop(None)
