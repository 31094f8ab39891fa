"""No engine frame anywhere in a reported chain: ``__cause__``, ``__context__`` and the members
of exception groups, including the chains that interrupts and timeouts create."""

from __future__ import annotations

import os

import pytest

from cellbox.child import errors
from tests.unit.executor_harness import h  # noqa: F401 - fixture


def assert_no_engine(tb: str) -> None:
    assert errors.ENGINE_DIR not in tb, tb
    assert f"cellbox{os.sep}child" not in tb, tb


def test_timeout_of_awaiting_cell(h):
    done = h.error("import asyncio\nawait asyncio.sleep(10)", timeout=0.2)
    tb = done.error.traceback
    assert_no_engine(tb)
    assert '"<cell 1>", line 2, in <module>\n    await asyncio.sleep(10)' in tb
    assert tb.endswith("TimeoutError: cell timed out after 0.2 s")


def test_timeout_of_awaiting_cell_whose_code_raises_while_cancelled(h):
    done = h.error("import asyncio\ntry:\n    await asyncio.sleep(10)\nfinally:\n"
                   "    raise ValueError('cleanup failed')", timeout=0.2)
    assert_no_engine(done.error.traceback)
    assert "CancelledError" in done.error.traceback


def test_timeout_inside_a_task_group(h):
    done = h.error("import asyncio\nasync def f():\n    try:\n        await asyncio.sleep(10)\n"
                   "    finally:\n        raise ValueError('x')\n"
                   "async with asyncio.TaskGroup() as tg:\n    tg.create_task(f())\n"
                   "    tg.create_task(f())", timeout=0.2)
    tb = done.error.traceback
    assert_no_engine(tb)
    assert "ValueError: x" in tb


@pytest.mark.parametrize("code", [
    "raise ValueError() from KeyboardInterrupt()",
    "raise ValueError() from KeyboardInterrupt",
    "try:\n    raise KeyboardInterrupt\nexcept BaseException:\n    raise ValueError()",
])
def test_chains_through_keyboard_interrupt(h, code):
    tb = h.error(code).error.traceback
    assert_no_engine(tb)
    assert "KeyboardInterrupt" in tb and tb.endswith("ValueError")


def test_interrupt_caught_and_chained(h):
    done = h.error("import signal\ntry:\n    signal.raise_signal(signal.SIGINT)\n"
                   "except KeyboardInterrupt as e:\n    raise RuntimeError('after ^C') from e")
    tb = done.error.traceback
    assert f"cellbox{os.sep}child" not in tb
    assert '"<cell 1>", line 3, in <module>' in tb and tb.endswith("RuntimeError: after ^C")


def test_held_interrupt_caught_and_chained(h):
    h.ex.namespace["ex"] = h.ex
    done = h.error("import signal\ntry:\n    ex.hold()\n    try:\n"
                   "        signal.raise_signal(signal.SIGINT)\n    finally:\n        ex.release()\n"
                   "except KeyboardInterrupt as e:\n    raise RuntimeError('held') from e")
    assert f"cellbox{os.sep}child" not in done.error.traceback


def test_timeout_caught_and_chained_in_sync_cell(h):
    done = h.error("import time\ntry:\n    time.sleep(10)\nexcept TimeoutError as e:\n"
                   "    raise LookupError('late') from e", timeout=0.1)
    tb = done.error.traceback
    assert_no_engine(tb)
    assert "TimeoutError: cell timed out after 0.1 s" in tb and tb.endswith("LookupError: late")


def test_explicit_chain_keeps_both_user_frames(h):
    tb = h.error("try:\n    1/0\nexcept:\n    raise KeyError('k')").error.traceback
    assert_no_engine(tb)
    assert '"<cell 1>", line 2, in <module>\n    1/0' in tb
    assert '"<cell 1>", line 4, in <module>\n    raise KeyError(\'k\')' in tb
    assert "During handling of the above exception, another exception occurred" in tb


def test_exception_group_members_and_their_chains(h):
    tb = h.error("def f(i):\n    try:\n        1/0\n    except ZeroDivisionError:\n"
                 "        raise ValueError(i)\n"
                 "errs = []\nfor i in range(2):\n    try:\n        f(i)\n"
                 "    except ValueError as e:\n        errs.append(e)\n"
                 "raise ExceptionGroup('many', errs)").error.traceback
    assert_no_engine(tb)
    assert tb.count('in f\n') >= 2 and "ZeroDivisionError" in tb
