"""The escalation ladder as a pure policy, driven with fake times."""

import math

from cellbox.supervisor.ladder import Ladder


def test_no_timeout_no_deadline():
    ladder = Ladder(started=0.0, timeout=None, grace=2.0)
    assert ladder.deadline == math.inf
    assert ladder.expired(1e9) == "none"


def test_timeout_then_grace_then_kill():
    ladder = Ladder(started=10.0, timeout=1.0, grace=2.0)
    assert ladder.deadline == 13.0
    assert ladder.expired(12.9) == "none"
    assert ladder.expired(13.0) == "kill"
    assert ladder.reason == "timeout"


def test_interrupt_moves_deadline_earlier_never_later():
    ladder = Ladder(started=0.0, timeout=10.0, grace=2.0)
    assert ladder.interrupt(1.0) == "sigint"
    assert ladder.deadline == 3.0 and ladder.reason == "interrupt"
    assert ladder.interrupt(2.5) == "sigint"
    assert ladder.deadline == 3.0
    assert ladder.expired(3.0) == "kill" and ladder.reason == "interrupt"


def test_interrupt_after_timeout_keeps_earlier_deadline():
    ladder = Ladder(started=0.0, timeout=1.0, grace=2.0)
    ladder.interrupt(2.9)
    assert ladder.deadline == 3.0


def test_first_reason_wins():
    ladder = Ladder(started=0.0, timeout=1.0, grace=5.0)
    ladder.interrupt(0.5)
    assert ladder.expired(5.5) == "kill" and ladder.reason == "interrupt"
