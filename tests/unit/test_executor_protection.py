"""Namespace protection: what the executor restores before each cell, and what it keeps."""

from __future__ import annotations

import builtins
import sys

from tests.unit.executor_harness import h  # noqa: F401 - fixture


def test_rebinding_builtins_is_restored(h):
    h.ok("__builtins__ = None")
    assert h.value("len([1, 2])") == "2"
    assert h.ex.namespace["__builtins__"] is builtins


def test_deleting_builtins_is_restored(h):
    h.ok("del __builtins__")
    assert h.value("len('abc')") == "3"


def test_builtins_replaced_by_empty_dict_is_restored(h):
    h.ok("__builtins__ = {}")
    assert h.value("abs(-1)") == "1"


def test_name_restored(h):
    h.ok("__name__ = 'not main'")
    assert h.value("__name__") == "'__main__'"


def test_globals_clear_recovers(h):
    h.ok("x = 1")
    h.ok("globals().clear()")
    assert h.value("__name__") == "'__main__'"
    assert h.value("len([1])") == "1"
    h.ok("print('still prints')")
    assert "still prints\n" in h.text()
    assert h.error("x").error.type == "NameError"
    h.ok("display(1)")
    assert h.displays[-1].data["text/plain"] == "1"


def test_deleted_builtin_names_restored(h):
    # (names the test process itself needs between cells, like len, are left alone)
    h.ok("import builtins\ndel builtins.divmod\ndel builtins.print")
    assert h.value("divmod(7, 2)") == "(3, 1)"
    h.ok("print('p')")
    assert h.text() == "p\n"


def test_global_print_rebound_to_non_callable(h):
    h.ok("print = 5")
    h.ok("print('back')")
    assert h.text() == "back\n"
    assert "print" not in h.ex.namespace


def test_builtins_print_rebound_to_non_callable(h):
    h.ok("import builtins\nbuiltins.print = None")
    h.ok("print('restored')")
    assert h.text() == "restored\n"


def test_callable_print_replacement_is_kept(h):
    h.ok("print = lambda *a: 'mine'")
    assert h.value("print('x')") == "'mine'"


def test_callable_builtins_print_replacement_is_kept(h):
    h.ok("import builtins\n_real = builtins.print\nbuiltins.print = lambda *a: 'custom'")
    assert h.value("print('x')") == "'custom'"
    h.ok("builtins.print = _real")


def test_other_builtins_rebound_are_the_users_business(h):
    h.ok("import builtins\nbuiltins.my_helper = lambda: 'h'")
    assert h.value("my_helper()") == "'h'"


def test_sys_stdout_none_restored(h):
    h.ok("import sys\nsys.stdout = None")
    h.ok("print('out again')")
    assert h.text() == "out again\n"


def test_sys_stdout_replaced_by_writer_is_kept(h):
    h.ok("import io, sys\nbuf = io.StringIO()\nsys.stdout = buf")
    h.ok("print('into buf')")
    assert h.value("sys.stdout = sys.__stdout__ if False else sys.stderr\nbuf.getvalue()") == (
        "'into buf\\n'")
    h.ok("sys.stdout = sys.stderr")


def test_display_is_a_builtin(h):
    assert "display" not in h.ex.namespace
    assert h.value("display is __import__('builtins').display") == "True"


def test_install_replaces_streams_and_input(h):
    h.ok("1")
    assert builtins.input.__module__ == "cellbox.child.capture"
    assert sys.stdout is h.ex.stdout and sys.stderr is h.ex.stderr


def test_uninstall_restores_everything():
    import asyncio
    import getpass
    import signal

    from cellbox.child.executor import Executor

    before = (sys.stdout, sys.stderr, builtins.input, getpass.getpass,
              signal.getsignal(signal.SIGALRM), "display" in builtins.__dict__)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        ex = Executor(emit_stream=lambda n, t: None, emit_display=lambda d: None)
        ex.install()
        assert sys.stdout is ex.stdout
        assert loop.get_exception_handler() is not None
        ex.uninstall()
        after = (sys.stdout, sys.stderr, builtins.input, getpass.getpass,
                 signal.getsignal(signal.SIGALRM), "display" in builtins.__dict__)
        assert after == before
        assert loop.get_exception_handler() is None
        assert loop.get_task_factory() is None
    finally:
        loop.close()
        asyncio.set_event_loop(None)
