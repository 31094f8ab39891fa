"""Errors: syntax errors, runtime tracebacks, chains, notes, special exceptions, sys.last_*."""

from __future__ import annotations

import sys

import pytest

from tests.unit.executor_harness import h, make_harness  # noqa: F401 - fixtures


def test_runtime_error_traceback_format(h):
    done = h.error("1/0")
    assert done.error.type == "ZeroDivisionError"
    assert done.error.message == "division by zero"
    tb = done.error.traceback
    assert tb.startswith('Traceback (most recent call last):\n  File "<cell 1>", line 1, in '
                         '<module>\n    1/0\n')
    assert tb.endswith("ZeroDivisionError: division by zero")
    assert done.value is None


def test_engine_frames_hidden(h):
    tb = h.error("def f():\n    raise RuntimeError('x')\nf()").error.traceback
    assert "cellbox" not in tb
    assert tb.count('File "') == 2


def test_engine_frames_hidden_in_awaiting_cell(h):
    tb = h.error("import asyncio\nawait asyncio.sleep(0)\nraise KeyError('k')").error.traceback
    assert "cellbox" not in tb
    assert '"<cell 1>", line 3, in <module>' in tb


def test_traceback_through_function_from_earlier_cell(h):
    h.ok("def helper(x):\n    y = x + 1\n    return y / 0")
    tb = h.error("z = 3\nhelper(z)").error.traceback
    assert 'File "<cell 2>", line 2, in <module>\n    helper(z)' in tb
    assert 'File "<cell 1>", line 3, in helper\n    return y / 0' in tb


def test_multiline_cell_line_number(h):
    tb = h.error("a = 1\nb = 2\nc = a / (b - 2)").error.traceback
    assert '"<cell 1>", line 3, in <module>\n    c = a / (b - 2)' in tb


def test_explicit_chain(h):
    done = h.error("try:\n    {}['missing']\nexcept KeyError as e:\n"
                   "    raise ValueError('bad') from e")
    tb = done.error.traceback
    assert "KeyError: 'missing'" in tb
    assert "The above exception was the direct cause of the following exception" in tb
    assert tb.endswith("ValueError: bad")


def test_implicit_chain(h):
    tb = h.error("try:\n    1/0\nexcept ZeroDivisionError:\n    [][1]").error.traceback
    assert "During handling of the above exception, another exception occurred" in tb
    assert "ZeroDivisionError" in tb and tb.endswith("IndexError: list index out of range")


def test_suppressed_context(h):
    tb = h.error("try:\n    1/0\nexcept ZeroDivisionError:\n    raise KeyError(1) from None"
                 ).error.traceback
    assert "ZeroDivisionError" not in tb


def test_notes(h):
    done = h.error("e = ValueError('v')\ne.add_note('first note')\ne.add_note('second')\nraise e")
    assert done.error.notes == ["first note", "second"]
    assert done.error.traceback.endswith("ValueError: v\nfirst note\nsecond")


def test_no_notes_added_to_exception(h):
    h.error("raise ValueError('plain')")
    assert getattr(sys.last_value, "__notes__", None) is None


def test_syntax_error_report(h):
    done = h.error("x = 1\ny = = 2")
    assert done.error.type == "SyntaxError"
    assert done.error.message == "invalid syntax (line 2, column 5)"
    assert done.error.traceback == ('  File "<cell 1>", line 2\n    y = = 2\n        ^\n'
                                    'SyntaxError: invalid syntax')


def test_syntax_error_means_no_partial_execution(h):
    h.error("side = 1\nprint('ran')\ny = = 2")
    assert "side" not in h.ex.namespace
    assert h.text() == ""


def test_syntax_error_in_last_expression_no_partial_execution(h):
    h.error("side = 1\n(1 +")
    assert "side" not in h.ex.namespace


def test_indentation_error(h):
    done = h.error("if True:\nx = 1")
    assert done.error.type == "IndentationError"
    assert '"<cell 1>", line 2' in done.error.traceback


def test_compile_phase_syntax_error_has_source_line(h):
    done = h.error("x = 1\nreturn x")
    assert done.error.type == "SyntaxError"
    assert done.error.message == "'return' outside function (line 2, column 1)"
    assert '"<cell 1>", line 2\n    return x\n    ^' in done.error.traceback


def test_await_outside_function_in_class_body(h):
    done = h.error("import asyncio\nclass A:\n    x = await asyncio.sleep(0)")
    assert done.error.type == "SyntaxError"
    assert "x = await asyncio.sleep(0)" in done.error.traceback


def test_null_bytes_reported(h):
    done = h.error("x = 1\0")
    assert done.error.type in ("SyntaxError", "ValueError")
    assert h.value("2") == "2"


def test_user_raised_keyboard_interrupt(h):
    done = h.error("raise KeyboardInterrupt")
    assert done.error.type == "KeyboardInterrupt"
    assert done.stopped is None


def test_system_exit_is_reported_and_session_survives(h):
    h.ok("kept = 1")
    done = h.error("import sys\nsys.exit(3)")
    assert done.error.type == "SystemExit"
    assert done.error.message == "3"
    assert h.value("kept") == "1"


def test_system_exit_in_awaiting_cell(h):
    done = h.error("import asyncio\nawait asyncio.sleep(0)\nraise SystemExit('bye')")
    assert done.error.type == "SystemExit"
    assert h.value("1") == "1"


def test_cancelled_error_in_sync_cell(h):
    done = h.error("import asyncio\nraise asyncio.CancelledError()")
    assert done.error.type == "CancelledError"


def test_cell_cancelling_itself(h):
    done = h.error("import asyncio\nasyncio.current_task().cancel()\nawait asyncio.sleep(1)")
    assert done.error.type == "CancelledError"
    assert done.stopped is None
    assert h.value("await asyncio.sleep(0, 'alive')") == "'alive'"


def test_exception_group(h):
    done = h.error("raise ExceptionGroup('many', [ValueError(1), TypeError(2)])")
    assert done.error.type == "ExceptionGroup"
    assert "many (2 sub-exceptions)" in done.error.message
    assert "ValueError: 1" in done.error.traceback and "TypeError: 2" in done.error.traceback


def test_except_star_partial_handling(h):
    done = h.error("try:\n    raise ExceptionGroup('g', [ValueError(1), TypeError(2)])\n"
                   "except* ValueError:\n    pass")
    assert done.error.type == "ExceptionGroup"
    assert "TypeError: 2" in done.error.traceback
    assert "ValueError: 1" not in done.error.traceback


def test_sys_last_exception_set(h):
    h.error("raise LookupError('last')")
    assert sys.last_type is LookupError
    assert str(sys.last_value) == "last"
    assert sys.last_traceback is sys.last_value.__traceback__
    if sys.version_info >= (3, 12):
        assert sys.last_exc is sys.last_value


def test_sys_last_traceback_has_no_engine_frames(h):
    h.error("def f():\n    1/0\nf()")
    tb = sys.last_traceback
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert files == ["<cell 1>", "<cell 1>"]


def test_next_cell_works_after_error_and_partial_execution_kept(h):
    h.error("a = 1\n1/0\nb = 2")
    assert h.value("a") == "1"
    assert h.error("b").error.type == "NameError"


def test_repr_failure_is_the_cells_error(h):
    done = h.error("class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\n"
                   "Bad()")
    assert done.error.type == "RuntimeError"
    assert "__repr__" in done.error.traceback
    assert done.value is None


def test_broken_str_of_exception(h):
    done = h.error("class E(Exception):\n    def __str__(self):\n        raise ValueError\n"
                   "raise E()")
    assert done.error.type == "E"
    assert "could not be converted" in done.error.message


def test_recursion_error(h):
    done = h.error("def r():\n    return r()\nr()")
    assert done.error.type == "RecursionError"
    assert "Previous line repeated" in done.error.traceback
    assert h.value("2 + 2") == "4"


@pytest.mark.parametrize("limited, fatal", [(True, "memory"), (False, None)])
def test_memory_error_fatal_only_when_limited(make_harness, limited, fatal):
    harness = make_harness(memory_limited=limited)
    done = harness.error("raise MemoryError()")
    assert done.error.type == "MemoryError"
    assert done.fatal == fatal


def test_error_in_awaiting_cell_after_await(h):
    h.ok("import asyncio\nasync def bad():\n    await asyncio.sleep(0)\n    raise OSError('io')")
    tb = h.error("await bad()").error.traceback
    assert '"<cell 2>", line 1, in <module>\n    await bad()' in tb
    assert '"<cell 1>", line 4, in bad' in tb
    assert tb.endswith("OSError: io")


def test_error_message_is_valid_utf8(h):
    done = h.error("raise ValueError('\\ud800 lone')")
    done.error.message.encode("utf-8")
    done.error.traceback.encode("utf-8")


def test_asyncio_run_in_cell_gets_a_hint(h):
    done = h.error("import asyncio\nasync def main():\n    return 1\nc = main()\ntry:\n"
                   "    asyncio.run(c)\nfinally:\n    c.close()")
    assert done.error.type == "RuntimeError"
    assert "use top-level `await coro`" in done.error.traceback
    assert done.error.notes == []
