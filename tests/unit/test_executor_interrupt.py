"""Per-cell timeouts (SIGALRM) and interrupts (SIGINT routed to Executor.interrupt).

Signals are raised from inside the cell (``signal.raise_signal``) or by a timer thread
(``os.kill`` while the main thread sleeps in C); nothing here sleeps to wait for state.
"""

from __future__ import annotations

import signal
import time

import pytest

from cellbox.child.executor import MAX_TIMEOUT
from tests.unit.executor_harness import h  # noqa: F401 - fixture

KILL_SOON = ("import os, signal, threading\n"
             "threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()\n")


# --- timeouts ---------------------------------------------------------------------------------

def test_timeout_stops_time_sleep(h):
    t0 = time.monotonic()
    done = h.error("import time\ntime.sleep(10)", timeout=0.1)
    assert time.monotonic() - t0 < 5
    assert done.error.type == "TimeoutError"
    assert done.error.message == "cell timed out after 0.1 s"
    assert done.stopped == "timeout"
    assert '"<cell 1>", line 2, in <module>\n    time.sleep(10)' in done.error.traceback


def test_timeout_stops_busy_python_loop(h):
    done = h.error("while True:\n    pass", timeout=0.1)
    assert done.error.type == "TimeoutError"
    assert done.stopped == "timeout"


def test_timeout_runs_finally_and_namespace_survives(h):
    h.ok("kept = 'yes'")
    h.error("import time\ntry:\n    time.sleep(10)\nfinally:\n    cleaned = True", timeout=0.1)
    assert h.value("cleaned, kept") == "(True, 'yes')"


def test_cell_catching_timeout_is_ok(h):
    done = h.ok("import time\ntry:\n    time.sleep(10)\nexcept TimeoutError:\n    r = 'caught'\nr",
                timeout=0.1)
    assert done.value.repr == "'caught'"
    assert done.stopped == "timeout"


def test_timeout_of_awaiting_cell(h):
    done = h.error("import asyncio\nawait asyncio.sleep(10)", timeout=0.1)
    assert done.error.type == "TimeoutError"
    assert done.stopped == "timeout"
    tb = done.error.traceback
    assert "CancelledError" in tb
    assert "The above exception was the direct cause of the following exception" in tb
    assert '"<cell 1>", line 2, in <module>' in tb
    assert tb.endswith("TimeoutError: cell timed out after 0.1 s")


def test_timeout_of_awaiting_cell_runs_finally(h):
    h.error("import asyncio\ntry:\n    await asyncio.sleep(10)\nfinally:\n    fin = 1", timeout=0.1)
    assert h.value("fin") == "1"


def test_awaiting_cell_catching_cancellation_is_ok(h):
    done = h.ok("import asyncio\ntry:\n    await asyncio.sleep(10)\n"
                "except asyncio.CancelledError:\n    r = 'handled'\nr", timeout=0.1)
    assert done.value.repr == "'handled'"
    assert done.stopped == "timeout"


def test_timeout_in_sync_step_of_awaiting_cell(h):
    done = h.error("import asyncio, time\nawait asyncio.sleep(0)\ntime.sleep(10)", timeout=0.1)
    assert done.error.type == "TimeoutError"
    assert "CancelledError" not in done.error.traceback


def test_loop_and_background_tasks_survive_timeout(h):
    h.ok("import asyncio\nticks = []\nasync def tick():\n    while True:\n"
         "        ticks.append(1)\n        await asyncio.sleep(0)\n"
         "bg = asyncio.create_task(tick())")
    h.error("await asyncio.sleep(10)", timeout=0.05)
    n = len(h.ex.namespace["ticks"])
    assert h.value("await asyncio.sleep(0)\nbg.done()") == "False"
    assert len(h.ex.namespace["ticks"]) > n


def test_fast_cell_with_timeout_disarms_timer(h):
    done = h.ok("1 + 1", timeout=5)
    assert done.stopped is None
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_timer_disarmed_after_timeout(h):
    h.error("while True: pass", timeout=0.05)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert h.value("sum(range(100))") == "4950"


def test_zero_timeout_means_none(h):
    done = h.ok("1", timeout=0)
    assert done.stopped is None


def test_late_alarm_is_ignored(h):
    h.ex.namespace["EX"] = h.ex
    done = h.ok("import sys\nEX.interrupt('timeout', sys._getframe())\n'still running'")
    assert done.value.repr == "'still running'"
    assert done.stopped is None


def test_alarm_before_deadline_is_ignored(h):
    h.ex.namespace["EX"] = h.ex
    done = h.ok("import sys\nEX.interrupt('timeout', sys._getframe())\n'early'", timeout=30)
    assert done.value.repr == "'early'"


# --- interrupts -------------------------------------------------------------------------------

def test_interrupt_python_code(h):
    done = h.error("import signal\nsignal.raise_signal(signal.SIGINT)\nnot_reached = 1")
    assert done.error.type == "KeyboardInterrupt"
    assert done.stopped == "interrupt"
    assert "not_reached" not in h.ex.namespace


def test_interrupt_time_sleep_from_thread(h):
    t0 = time.monotonic()
    done = h.error(KILL_SOON + "import time\ntime.sleep(10)")
    assert time.monotonic() - t0 < 5
    assert done.error.type == "KeyboardInterrupt"
    assert done.stopped == "interrupt"


def test_interrupt_awaiting_cell_cancels_it(h):
    t0 = time.monotonic()
    done = h.error(KILL_SOON + "import asyncio\nawait asyncio.sleep(10)")
    assert time.monotonic() - t0 < 5
    assert done.error.type == "CancelledError"
    assert done.error.message == "cell interrupted"
    assert done.stopped == "interrupt"


def test_interrupt_in_sync_step_of_awaiting_cell_raises_there(h):
    done = h.error("import asyncio, signal\nawait asyncio.sleep(0)\n"
                   "signal.raise_signal(signal.SIGINT)\nnot_reached = 1")
    assert done.error.type == "KeyboardInterrupt"
    assert done.stopped == "interrupt"


def test_interrupt_during_background_task_cancels_cell_not_task(h):
    h.ok("import asyncio, signal\nstate = []\nasync def bg():\n    await asyncio.sleep(0)\n"
         "    signal.raise_signal(signal.SIGINT)\n    state.append('bg survived')")
    done = h.error("t = asyncio.create_task(bg())\nawait asyncio.sleep(10)")
    assert done.error.type == "CancelledError"
    assert done.stopped == "interrupt"
    assert h.value("await asyncio.sleep(0)\nstate") == "['bg survived']"


def test_interrupt_with_no_cell_is_ignored(h):
    h.ok("1")
    h.ex.interrupt("interrupt", None)
    h.ex.interrupt("timeout", None)
    assert h.value("2") == "2"


def test_session_survives_interrupt(h):
    h.ok("kept = [1]")
    h.error("import signal\nsignal.raise_signal(signal.SIGINT)")
    assert h.value("kept") == "[1]"
    assert h.ok("3").stopped is None


def test_cell_catching_keyboard_interrupt_is_ok(h):
    done = h.ok("import signal\ntry:\n    signal.raise_signal(signal.SIGINT)\n"
                "except KeyboardInterrupt:\n    r = 'caught'\nr")
    assert done.value.repr == "'caught'"
    assert done.stopped == "interrupt"


def test_interrupt_before_user_code_sync(h):
    real = h.ex._compiler.compile

    def compile_then_interrupt(code, filename):
        import sys
        h.ex.interrupt("interrupt", sys._getframe())
        return real(code, filename)

    h.ex._compiler.compile = compile_then_interrupt
    done = h.error("ran = 1")
    assert done.error.type == "KeyboardInterrupt"
    assert done.stopped == "interrupt"
    assert "ran" not in h.ex.namespace


def test_interrupt_before_user_code_async(h):
    h.ok("import asyncio")
    real = h.ex._compiler.compile

    def compile_then_interrupt(code, filename):
        h.ex.interrupt("interrupt", None)
        return real(code, filename)

    h.ex._compiler.compile = compile_then_interrupt
    done = h.error("ran = 1\nawait asyncio.sleep(0)")
    assert done.error.type == "CancelledError"
    assert "ran" not in h.ex.namespace


def test_keyboard_interrupt_escaping_from_background_task(h):
    h.ok("import asyncio\nasync def bad():\n    raise KeyboardInterrupt")
    done = h.error("asyncio.create_task(bad())\nawait asyncio.sleep(10)")
    assert done.error.type == "CancelledError"
    assert done.stopped == "interrupt"
    assert "KeyboardInterrupt escaped from a background task" in h.text("stderr")
    assert h.value("1") == "1"


def test_system_exit_escaping_from_background_task_does_not_stop_cell(h):
    h.ok("import asyncio\nasync def leave():\n    raise SystemExit(2)")
    done = h.ok("asyncio.create_task(leave())\nfor _ in range(5):\n"
                "    await asyncio.sleep(0)\n'fine'")
    assert done.value.repr == "'fine'"
    assert done.stopped is None
    assert "SystemExit escaped" in h.text("stderr")


def test_stopped_is_none_for_normal_cells(h):
    assert h.ok("import asyncio\nawait asyncio.sleep(0)").stopped is None


def test_timeout_still_works_after_user_replaced_sigalrm_handler(h):
    h.ok("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)")
    done = h.error("while True: pass", timeout=0.05)
    assert done.error.type == "TimeoutError"


# --- an interrupt that arrives before its cell starts ------------------------------------------

def test_interrupt_next_stops_its_cell_before_user_code(h):
    h.ex.interrupt_next(7, "interrupt")
    done = h.error("ran = True", cell_id=7)
    assert done.error.type == "KeyboardInterrupt" and done.stopped == "interrupt"
    assert h.value("'ran' in globals()") == "False"


def test_interrupt_next_is_consumed_once(h):
    h.ex.interrupt_next(7, "interrupt")
    h.error("1", cell_id=7)
    assert h.value("2 + 2", cell_id=7) == "4"


def test_interrupt_next_never_stops_another_cell(h):
    h.ex.interrupt_next(8, "interrupt")
    assert h.value("2 + 2", cell_id=7) == "4"
    assert h.error("1", cell_id=8).stopped == "interrupt"


def test_interrupt_next_for_a_cell_that_ended_is_forgotten(h):
    # The host counts a cell as not started until its on_done: an interrupt routed to it
    # then is dropped with the cell, not kept for a later cell with that id.
    h.ok("pass")
    dones = []

    def on_done(done):
        h.ex.interrupt_next(7, "interrupt")
        dones.append(done)

    h.ex.start("1", cell_id=7, execution_count=99, on_done=on_done)
    assert dones and dones[0].stopped is None
    assert h.value("2 + 2", cell_id=7) == "4"


def test_interrupt_next_cancels_an_awaiting_cell_before_it_runs(h):
    h.ex.interrupt_next(7, "interrupt")
    done = h.error("import asyncio\nawait asyncio.sleep(0)\nran = True", cell_id=7)
    assert done.stopped == "interrupt" and done.error.type in ("CancelledError", "KeyboardInterrupt")
    assert h.value("'ran' in globals()") == "False"


# --- hold / release: engine code the cell called is not cut short -----------------------------

def test_interrupt_inside_a_hold_is_raised_by_release(h):
    h.ex.namespace["ex"] = h.ex
    done = h.error("import signal\nsteps = []\nex.hold()\ntry:\n"
                   "    signal.raise_signal(signal.SIGINT)\n    steps.append('held')\n"
                   "finally:\n    ex.release()\nsteps.append('after')")
    assert done.error.type == "KeyboardInterrupt" and done.stopped == "interrupt"
    assert h.value("steps") == "['held']"


def test_holds_nest(h):
    h.ex.namespace["ex"] = h.ex
    done = h.error("import signal\nsteps = []\nex.hold()\nex.hold()\n"
                   "signal.raise_signal(signal.SIGINT)\nex.release()\nsteps.append('inner')\n"
                   "ex.release()\nsteps.append('outer')")
    assert done.error.type == "KeyboardInterrupt"
    assert h.value("steps") == "['inner']"


def test_timeout_inside_a_hold_is_raised_by_release(h):
    h.ex.namespace["ex"] = h.ex
    done = h.error("import time\nex.hold()\ntry:\n    t0 = time.monotonic()\n"
                   "    while time.monotonic() - t0 < 0.3: pass\n    held = True\n"
                   "finally:\n    ex.release()", timeout=0.05)
    assert done.error.type == "TimeoutError" and done.stopped == "timeout"
    assert h.value("held") == "True"


def test_release_without_anything_held_is_quiet(h):
    h.ex.namespace["ex"] = h.ex
    assert h.value("ex.hold()\nex.release()\n'fine'") == "'fine'"


# --- timeouts too long for the timer ----------------------------------------------------------

@pytest.mark.parametrize("timeout", [1e10, 1e300, float("inf"), MAX_TIMEOUT * 2])
def test_timeout_past_what_the_timer_can_arm_is_none(h, timeout):
    done = h.ok("ran = 2 + 2\nran", timeout=timeout)
    assert (done.value.repr, done.stopped) == ("4", None)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert h.value("import asyncio\nawait asyncio.sleep(0)\n'async'", timeout=timeout) == "'async'"


def test_longest_timeout_is_armed_and_disarmed(h):
    seen = []
    h.ex.namespace["seen"] = seen
    h.ok("import signal\nseen.append(signal.getitimer(signal.ITIMER_REAL)[0])", timeout=MAX_TIMEOUT)
    assert seen[0] > MAX_TIMEOUT - 60
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
