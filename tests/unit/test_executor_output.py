"""Output capture (line-buffered stream writers) and input()/getpass()."""

from __future__ import annotations

import pytest

from cellbox.child.capture import NO_STDIN, StreamWriter
from tests.unit.executor_harness import h, make_harness  # noqa: F401 - fixtures


def test_print_is_one_sink_call(h):
    h.ok("print('hello')")
    assert h.chunks() == ["hello\n"]


def test_print_many_args_is_one_call(h):
    h.ok("print('a', 1, None, sep='-')")
    assert h.chunks() == ["a-1-None\n"]


def test_each_print_in_order(h):
    h.ok("for i in range(5):\n    print(i)")
    assert h.text() == "".join(f"{i}\n" for i in range(5))
    assert h.chunks()[0] == "0\n"  # the first line is never held back


def test_partial_line_flushed_at_cell_end(h):
    h.ok("print('a', end='')\nprint('b', end='')")
    assert h.chunks() == ["ab"]


def test_print_flush_true_sends_partial_line(h):
    h.ok("print('x', end='', flush=True)\nprint('y', end='')")
    assert h.chunks() == ["x", "y"]


def test_stderr_stream(h):
    h.ok("import sys\nsys.stderr.write('err\\n')\nprint('to err', file=sys.stderr)")
    assert h.chunks("stderr") == ["err\n", "to err\n"]
    assert h.chunks() == []


def test_output_separate_from_value(h):
    done = h.ok("print(1)\n2")
    assert done.value.repr == "2"
    assert h.text() == "1\n"


def test_output_in_awaiting_cell(h):
    h.ok("import asyncio\nprint('before')\nawait asyncio.sleep(0)\nprint('after')")
    assert h.text() == "before\nafter\n"


def test_writer_attributes(h):
    code = ("import sys\nw = sys.stdout\n(w.write('abc'), w.isatty(), w.encoding, w.fileno(), "
            "sys.stderr.fileno(), w.writable(), w.readable(), w.closed)")
    assert h.value(code) == "(3, False, 'utf-8', 1, 2, True, False, False)"


def test_write_rejects_bytes(h):
    done = h.error("import sys\nsys.stdout.write(b'x')")
    assert done.error.type == "TypeError"


def test_buffer_accepts_bytes(h):
    h.ok("import sys\nsys.stdout.buffer.write('é\\n'.encode())\nsys.stdout.buffer.flush()")
    assert h.text() == "é\n"


def test_writelines(h):
    h.ok("import sys\nsys.stdout.writelines(['a\\n', 'b\\n'])")
    assert h.text() == "a\nb\n"


def test_close_only_flushes(h):
    h.ok("import sys\nprint('x', end='')\nsys.stdout.close()\nprint('still')")
    assert h.text() == "xstill\n"


def test_non_ascii_intact(h):
    h.ok("print('héllo ✓ 日本語 🎉')")
    assert h.text() == "héllo ✓ 日本語 🎉\n"


def test_very_long_line_intact(h):
    h.ok("print('x' * 200_000 + 'end')")
    assert h.text() == "x" * 200_000 + "end\n"


def test_coalescing_flushes_past_limit(h):
    h.ok("import sys\nfor _ in range(200_000):\n    sys.stdout.write('x')")
    chunks = h.chunks()
    assert "".join(chunks) == "x" * 200_000
    assert 2 <= len(chunks) <= 4


def test_lone_surrogate_becomes_valid_utf8(h):
    h.ok("print('a\\ud800b')")
    text = h.text()
    text.encode("utf-8")
    assert text == "a\\ud800b\n"


def test_background_output_between_cells_is_flushed(h):
    h.ok("import asyncio\nasync def later():\n    print('from bg', end='')\n"
         "t = asyncio.create_task(later())")
    h.ok("await t")
    assert "from bg" in h.text()


def test_output_flushed_before_display(h):
    h.ok("print('first', end='')\ndisplay(2)\nprint('third')")
    kinds = [(name, d if name != "display" else d.data["text/plain"]) for name, d in h.events]
    assert kinds == [("stdout", "first"), ("display", "2"), ("stdout", "third\n")]


def test_stream_writer_unit():
    calls = []
    w = StreamWriter("stdout", 1, lambda n, t: calls.append((n, t)), limit=10, delay=None)
    assert w.write("abc") == 3
    assert calls == []
    w.write("defghijk")
    assert calls == [("stdout", "abcdefghijk")]
    w.write("z")
    w.flush()
    w.flush()
    assert calls[-1] == ("stdout", "z") and len(calls) == 2


# --- input ------------------------------------------------------------------------------------

def test_input_without_allow_stdin_raises_eof(h):
    done = h.error("input('name? ')")
    assert done.error.type == "EOFError"
    assert done.error.message == NO_STDIN
    assert "allowStdin" in done.error.message
    assert h.inputs == []


def test_input_with_allow_stdin(h):
    h.answers.append("Ada\n")
    done = h.ok("name = input('name? ')\nname", allow_stdin=True)
    assert done.value.repr == "'Ada'"
    assert h.inputs == [("name? ", False)]


def test_input_prompt_not_a_string(h):
    h.ok("input(42)", allow_stdin=True)
    assert h.inputs == [("42", False)]


def test_getpass_with_allow_stdin(h):
    h.answers.append("s3cret")
    assert h.value("import getpass\ngetpass.getpass()", allow_stdin=True) == "'s3cret'"
    assert h.inputs == [("Password: ", True)]


def test_getpass_imported_name(h):
    h.answers.append("pw")
    assert h.value("from getpass import getpass\ngetpass('pin: ')", allow_stdin=True) == "'pw'"
    assert h.inputs == [("pin: ", True)]


def test_getpass_without_allow_stdin(h):
    assert h.error("import getpass\ngetpass.getpass()").error.type == "EOFError"


def test_input_eof_from_client(h):
    h.answers.append(EOFError("closed"))
    done = h.error("input()", allow_stdin=True)
    assert done.error.type == "EOFError"


def test_allow_stdin_is_per_cell(h):
    h.ok("input()", allow_stdin=True)
    assert h.error("input()").error.type == "EOFError"


def test_input_flushes_output_first(h):
    order = []
    h.ex._stdin._request = lambda prompt, pw: order.append(("input", h.text())) or "v"
    h.ok("print('partial', end='')\ninput('> ')", allow_stdin=True)
    assert order == [("input", "partial")]


def test_input_in_awaiting_cell(h):
    h.answers.append("async answer")
    assert h.value("import asyncio\nawait asyncio.sleep(0)\ninput()", allow_stdin=True) == (
        "'async answer'")


def test_no_request_input_callback(make_harness):
    harness = make_harness(request_input=None)
    assert harness.error("input()", allow_stdin=True).error.type == "EOFError"


@pytest.mark.parametrize("code", ["input()", "__import__('builtins').input()"])
def test_input_is_the_builtin(h, code):
    assert h.error(code).error.type == "EOFError"


# --- properties -------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), max_size=30), st.integers(min_value=1, max_value=64))
def test_writer_delivers_everything_in_order(pieces, limit):
    calls = []
    w = StreamWriter("stdout", 1, lambda n, t: calls.append(t), limit=limit, delay=None)
    for piece in pieces:
        w.write(piece)
    w.flush()
    expected = "".join(pieces).encode("utf-8", "backslashreplace").decode("utf-8")
    assert "".join(calls) == expected
    assert all(calls)  # never an empty sink call
    for chunk in calls[:-1]:  # every chunk but the last ends a line or passed the limit
        assert "\n" in chunk or len(chunk) >= limit


def test_interrupt_while_waiting_for_input(h):
    import os
    import signal
    import threading

    def slow_answer(prompt, password):
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        import time
        time.sleep(10)
        return "never"

    h.ex._stdin._request = slow_answer
    done = h.error("input('? ')", allow_stdin=True)
    assert done.error.type == "KeyboardInterrupt"
    assert done.stopped == "interrupt"
