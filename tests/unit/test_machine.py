"""The session machine with fake times and fake children: each race as data, no process."""

from __future__ import annotations

import signal

import pytest

from cellbox.protocol import channel as ch
from cellbox.supervisor import machine as mc
from tests.unit.machine_driver import Driver

def signalled(sig: int) -> int:
    return sig  # a wait status for "killed by sig" (WIFSIGNALED, WTERMSIG == sig)


def exited(code: int) -> int:
    return code << 8


def ready_driver(**config) -> Driver:
    d = Driver(mc.Config(**{"timeout": None, "grace": 2.0, **config}))
    d.ready()
    return d


# -- the common path -------------------------------------------------------------------------


def test_submit_on_an_idle_session_writes_the_exec_at_once():
    d = ready_driver()
    assert d.m.state is mc.SessionState.IDLE
    ev = d.submit(1, "x = 1")
    assert ev.state is mc.EvalState.SENT
    assert [type(m) for m in d.children[1].sent] == [ch.Exec]
    assert d.m.state is mc.SessionState.BUSY
    d.output(b"hi\n")
    d.done()
    r = d.result(1)
    assert (r.status, r.state_lost, r.cause, r.stdout, r.execution_count) == ("ok", False, None, "hi\n", 1)
    assert d.m.state is mc.SessionState.IDLE


def test_evals_run_one_at_a_time_in_arrival_order():
    d = ready_driver()
    for key in (1, 2, 3):
        d.submit(key)
    assert [e.id for e in d.children[1].execs] == [1]
    d.done()
    d.done()
    assert [e.id for e in d.children[1].execs] == [1, 2, 3]
    d.done()
    assert d.order == [1, 2, 3]
    assert [d.result(k).execution_count for k in (1, 2, 3)] == [1, 2, 3]


def test_session_states_while_starting_and_respawning():
    d = Driver()
    assert d.m.state is mc.SessionState.STARTING and d.m.pid is None
    d.ready()
    assert d.m.state is mc.SessionState.IDLE and d.m.pid == 101
    d.exited(exited(3))
    assert d.m.state is mc.SessionState.DEAD
    d.submit(1)  # a respawn for this eval
    assert d.m.state is mc.SessionState.BUSY and d.m.pid is None
    assert d.evals[1].state is mc.EvalState.STARTING_CHILD


def test_silent_eval_keeps_the_count():
    d = ready_driver()
    d.submit(1)
    d.done()
    d.submit(2, silent=True)
    d.done()
    assert d.children[1].execs[1].execution_count == 2
    assert d.result(2).execution_count == 1 and d.m.execution_count == 1


# -- interrupts ------------------------------------------------------------------------------


def test_interrupt_while_the_child_starts_answers_without_running():
    d = Driver()
    d.submit(1)
    assert d.interrupt() is True
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost, r.execution_count) == ("interrupted", "interrupt", False, None)
    d.ready()
    assert d.children[1].execs == []  # it never ran


def test_interrupt_right_after_the_exec_is_addressed_then_woken():
    d = ready_driver()
    d.submit(1, "while True: pass")
    assert d.interrupt() is True
    sent = d.children[1].sent
    assert [type(m) for m in sent] == [ch.Exec, ch.Interrupt]
    assert sent[1].id == sent[0].id and d.children[1].wakes == 1
    d.done(error=True, stopped="interrupt")
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost) == ("interrupted", "interrupt", False)


def test_interrupt_names_the_running_cell_not_a_finished_one():
    d = ready_driver()
    d.submit(1)
    d.done()
    d.submit(2)
    d.interrupt()
    assert d.children[1].interrupts == [2]


def test_interrupt_with_nothing_running_hits_nothing():
    d = ready_driver()
    assert d.interrupt() is False
    assert d.children[1].sent == []


def test_interrupt_of_a_queued_eval_drops_it_and_the_running_one_continues():
    d = ready_driver()
    d.submit(1)
    d.submit(2)
    assert d.interrupt(2) is True
    r = d.result(2)
    assert (r.status, r.execution_count, r.state_lost) == ("interrupted", None, False)
    assert d.evals[1].state is mc.EvalState.SENT
    d.done()
    assert d.result(1).status == "ok"


def test_interrupt_that_is_ignored_ends_in_a_kill_after_the_grace():
    d = ready_driver(grace=2.0)
    d.submit(1, timeout=100)
    d.advance(1.0)
    d.interrupt()
    d.advance(1.9)
    assert 1 not in d.answers
    d.advance(0.1)
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost) == ("killed", "interrupt", True)
    assert d.children[1].killed == "interrupt"


def test_an_interrupted_cell_is_woken_again_until_it_answers():
    d = ready_driver(grace=1.0)
    d.submit(1, "import time; time.sleep(60)")
    d.interrupt()
    assert d.children[1].wakes == 1
    for _ in range(5):
        d.advance(mc.REWAKE)
    assert d.children[1].wakes == 6
    assert [type(m) for m in d.children[1].sent] == [ch.Exec, ch.Interrupt]  # one Interrupt
    d.done(error=True, stopped="interrupt")
    d.advance(mc.REWAKE)
    assert d.children[1].wakes == 6 and d.result(1).status == "interrupted"


def test_a_done_that_arrives_after_the_kill_is_ignored():
    d = ready_driver(grace=1.0)
    d.submit(1, timeout=1)
    d.advance(2.0)  # timeout + grace
    assert d.result(1).status == "killed" and d.result(1).cause == "timeout"
    d.done(gen=1, cell=1)  # too late: the answer stands
    assert len(d.answers) == 1
    d.submit(2)
    assert d.gen == 2 and d.evals[2].state is mc.EvalState.STARTING_CHILD
    d.ready()
    d.done()
    r = d.result(2)
    assert (r.status, r.state_lost) == ("ok", False)  # the kill was already reported


def test_timeout_caught_inside_the_grace_is_a_timeout_with_state_kept():
    d = ready_driver(grace=2.0)
    d.submit(1, timeout=1)
    d.advance(1.5)
    d.done(error=True, stopped="timeout")
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost) == ("timeout", "timeout", False)


def test_kill_answers_at_once_and_the_next_eval_starts_a_fresh_child():
    d = ready_driver(grace=0.5)
    d.submit(1, timeout=1)
    d.submit(2)
    d.output(b"last words\n")
    d.advance(1.5)
    assert d.result(1).stdout == "last words\n"
    assert d.gen == 2 and d.evals[2].state is mc.EvalState.STARTING_CHILD
    d.exited(signalled(signal.SIGKILL), gen=1)  # the reaper, later: ignored
    assert 2 not in d.answers


# -- deaths, closes, restarts ----------------------------------------------------------------


def test_death_while_idle_makes_the_next_eval_say_state_lost():
    d = ready_driver()
    d.submit(1, "x = 1")
    d.done()
    d.exited(signalled(signal.SIGSEGV))
    assert d.m.state is mc.SessionState.DEAD
    d.submit(2, "x")
    d.ready()
    d.done(error=True)
    r = d.result(2)
    assert r.state_lost is True and r.cause is None
    d.submit(3)
    d.done()
    assert d.result(3).state_lost is False


def test_death_while_running_names_the_cause():
    d = ready_driver(cpu_seconds=5)
    d.submit(1)
    d.exited(signalled(signal.SIGSEGV))
    assert (d.result(1).status, d.result(1).cause, d.result(1).state_lost) == ("killed", "signal SIGSEGV", True)
    d.submit(2)
    d.ready()
    d.exited(exited(3))
    assert d.result(2).cause == "exit 3"


@pytest.mark.parametrize("cpu_used, cause", [(6.0, "cpu"), (0.5, "memory")])
def test_a_sigkill_we_did_not_send_is_cpu_or_memory(cpu_used, cause):
    d = ready_driver(cpu_seconds=5)
    d.submit(1)
    d.m.child_exited(1, signalled(signal.SIGKILL), d.now, cpu_used=cpu_used)
    d.pump()
    assert d.result(1).cause == cause


def test_close_with_a_queue_answers_everything_killed():
    d = ready_driver()
    for key in (1, 2, 3):
        d.submit(key)
    d.close()
    for key in (1, 2, 3):
        r = d.result(key)
        assert (r.status, r.cause, r.state_lost) == ("killed", "closed", True)
    assert [d.result(k).execution_count for k in (2, 3)] == [None, None]
    assert d.children[1].killed == "closed"
    assert d.m.state is mc.SessionState.CLOSED
    d.submit(4)
    assert d.result(4).cause == "closed"


def test_restart_with_a_queue_answers_restart_and_starts_fresh():
    d = ready_driver()
    d.submit(1)
    d.done()
    d.submit(2)
    d.submit(3)
    gen = d.restart()
    assert {d.result(k).cause for k in (2, 3)} == {"restart"}
    assert all(d.result(k).state_lost for k in (2, 3))
    assert gen == 2 and d.m.state is mc.SessionState.STARTING
    d.ready()
    d.submit(4)
    d.done()
    r = d.result(4)
    assert (r.execution_count, r.state_lost) == (1, False)


def test_close_while_the_child_starts_kills_it_when_it_is_ready():
    d = Driver()
    d.submit(1)
    d.close()
    assert d.result(1).cause == "closed"
    d.ready(gen=1)
    assert d.children[1].killed == "replaced"
    r = d.result(1)
    assert (r.status, r.state_lost, r.execution_count) == ("killed", True, None)


def test_start_failure_answers_the_waiting_eval_and_the_next_tries_again():
    d = Driver()
    d.submit(1)
    d.submit(2)
    d.start_failed(message="no memory")
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost, r.error.type) == ("killed", "start failed", True, "SessionStartFailed")
    assert d.gen == 2 and d.evals[2].state is mc.EvalState.STARTING_CHILD


# -- the channel -----------------------------------------------------------------------------


def test_corrupt_channel_is_killed_at_once_with_an_honest_answer():
    d = ready_driver()
    d.submit(1)
    d.channel_closed(corrupt=True)
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost) == ("killed", "corrupt channel", True)


def test_closed_channel_is_killed_after_the_grace_unless_the_child_exits():
    d = ready_driver(grace=1.0)
    d.submit(1)
    d.channel_closed()
    d.advance(0.9)
    assert 1 not in d.answers
    d.advance(0.1)
    assert d.result(1).cause == "channel closed"
    d.submit(2)
    d.ready()
    d.channel_closed()
    d.exited(exited(70))
    assert d.result(2).cause == "exit 70"


# -- input -----------------------------------------------------------------------------------


def test_input_is_accepted_only_while_the_eval_waits_for_it():
    d = Driver()
    ev = d.submit(1, allow_stdin=True)
    assert d.m.send_input(ev, "x") is False  # its child is still starting
    d.ready()
    assert d.m.send_input(ev, "x") is False  # it has not asked
    d.m.child_message(1, ch.InputRequest(id=1, prompt="? "), d.now)
    d.pump()
    assert d.asks[0].prompt == "? "
    assert d.m.send_input(ev, "x") is True
    d.pump()
    assert d.children[1].sent[-1] == ch.InputReply(text="x")
    assert d.m.send_input(ev, "y") is False


# -- output ----------------------------------------------------------------------------------


def test_output_cap_head_tail_and_exact_count():
    d = ready_driver(output_bytes=10)
    d.submit(1)
    d.output(b"a" * 7)
    d.output(b"b" * 20)
    d.done()
    r = d.result(1)
    assert r.stdout.startswith("aaaaa") and r.stdout.endswith("bbbbb")
    assert r.truncated.stdout == 27 - 10
    assert "[cellbox: 17 bytes of output dropped here]" in r.stdout


def test_displays_count_against_the_cap():
    d = ready_driver(output_bytes=100)
    d.submit(1)
    for _ in range(5):
        d.display(size=20)
    d.done()
    r = d.result(1)
    assert len(r.displays) == 2 and len(d.shows) == 2
    assert r.truncated.stdout == 60
    assert "[cellbox: 60 bytes of output dropped here]" in r.stdout


def test_output_between_evals_is_capped_per_window_with_a_marker():
    d = ready_driver(output_bytes=100)
    d.submit(1)
    d.done()
    for _ in range(10):
        d.output(b"x" * 50)
    idle = [o for o in d.outputs if o.ev is None]
    assert sum(len(o.text) for o in idle) == 100
    assert all(o.request_id == 1 for o in idle)
    d.advance(mc.IDLE_WINDOW)  # the window ends: the marker says how much was dropped
    assert d.outputs[-1].text == "\n[cellbox: 400 bytes of output dropped here]\n"
    d.output(b"y" * 10)  # a fresh window
    assert d.outputs[-1].text == "y" * 10


def test_output_of_an_old_child_is_never_attributed_to_the_new_eval():
    d = ready_driver(grace=0.5)
    d.submit(1, timeout=1)
    d.advance(2)
    d.submit(2)
    d.ready()
    d.output(b"stale", gen=1)
    d.output(b"fresh", gen=2)
    d.done()
    assert d.result(2).stdout == "fresh"


# -- found by mutation testing (tests/mutation) ----------------------------------------------


def test_zero_timeout_means_none_even_over_a_session_default():
    d = ready_driver(timeout=5.0)
    d.submit(1, timeout=0)
    assert d.children[1].execs[0].timeout is None
    d.advance(100.0)
    assert 1 not in d.answers and d.children[1].killed is None
    d.done()
    assert d.result(1).status == "ok"


def test_last_words_of_a_killed_child_drained_before_the_kill_is_confirmed_go_to_its_eval():
    d = ready_driver(grace=0.5)
    d.submit(1, timeout=1)
    d.now += 1.5
    d.m.tick(d.now)
    effects = d.m.take()
    assert mc.Kill(1, "timeout") in effects
    for effect in effects:  # the shell: SIGKILL, deliver what the pipes held, then confirm
        if not isinstance(effect, mc.Kill):
            d._perform(effect)
    d.m.child_output(1, "stdout", b"last words\n", d.now)
    assert 1 not in d.answers
    d.m.child_killed(1, d.now)
    d.pump()
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost, r.stdout) == ("killed", "timeout", True, "last words\n")
    n = len(d.outputs)
    d.output(b"later", gen=1)  # after the confirmation: nobody's
    assert len(d.outputs) == n


def test_a_fatal_done_answers_killed_and_replaces_the_child():
    d = ready_driver()
    d.submit(1)
    d.done(error=True, fatal="memory")
    r = d.result(1)
    assert (r.status, r.cause, r.state_lost) == ("killed", "memory", True)
    assert d.children[1].killed == "memory"
    d.submit(2)
    assert d.gen == 2 and d.evals[2].state is mc.EvalState.STARTING_CHILD
    d.ready()
    d.done()
    assert d.result(2).state_lost is False  # the loss was reported by eval 1


def test_a_child_killed_while_idle_makes_the_next_eval_say_state_lost():
    d = ready_driver(grace=1.0)
    d.channel_closed()
    d.advance(1.0)
    assert d.children[1].killed == "channel closed"
    d.submit(1)
    d.ready()
    d.done()
    assert d.result(1).state_lost is True


def test_restart_after_a_death_while_idle_starts_clean():
    d = ready_driver()
    d.exited(signalled(signal.SIGSEGV))
    d.restart()
    d.ready()
    d.submit(1)
    d.done()
    assert d.result(1).state_lost is False  # the client asked for an empty namespace


def test_output_dropped_between_evals_is_reported_before_the_next_eval():
    d = ready_driver(output_bytes=100)
    d.submit(1)
    d.done()
    d.output(b"x" * 150)
    d.submit(2)
    marker = "\n[cellbox: 50 bytes of output dropped here]\n"
    assert [(o.ev, o.text) for o in d.outputs[-1:]] == [(None, marker)]
    d.output(b"mine")
    d.advance(mc.IDLE_WINDOW)
    d.done()
    assert [o.text for o in d.outputs].count(marker) == 1
    assert d.result(2).stdout == "mine"


def test_a_display_between_evals_is_shown_while_the_window_has_room():
    d = ready_driver(output_bytes=100)
    d.submit(1)
    d.done()
    d.display(cell=None, size=60)
    d.display(cell=None, size=60)  # over the window's budget: dropped, and said so later
    assert [(s.ev, s.request_id) for s in d.shows] == [(None, 1)]
    d.advance(mc.IDLE_WINDOW)
    assert d.outputs[-1].text == "\n[cellbox: 60 bytes of output dropped here]\n"
