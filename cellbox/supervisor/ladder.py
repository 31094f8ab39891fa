"""The escalation ladder for one running eval, as a pure policy (no clocks, no signals).

Theory of operation (PROTOCOL.md section 6): the child enforces the eval's timeout itself
(first rung: the cell is cancelled or gets ``TimeoutError``). An interrupt asks the supervisor
to send SIGINT (first rung). Either way, if no reply comes within ``grace`` seconds of the rung,
the supervisor kills the child's process group (second rung) and reports ``killed``.

The supervisor owns the clock: it calls ``interrupt(now)`` when asked to interrupt and
``expired(now)`` when ``deadline`` passes, and performs the returned action.

Invariants: ``deadline`` never moves later; the first stop reason (timeout or interrupt) is the
``cause`` reported if the child has to be killed.
"""

from __future__ import annotations

import math
from typing import Literal

Action = Literal["none", "sigint", "kill"]


class Ladder:
    def __init__(self, *, started: float, timeout: float | None, grace: float) -> None:
        self.grace = grace
        self.reason: Literal["timeout", "interrupt"] | None = None
        self.deadline = started + timeout + grace if timeout else math.inf
        self._timeout_at = started + timeout if timeout else math.inf

    def interrupt(self, now: float) -> Action:
        """An interrupt was asked for: SIGINT the child, and kill it after the grace period."""
        if self.reason is None:
            self.reason = "interrupt"
        self.deadline = min(self.deadline, now + self.grace)
        return "sigint"

    def expired(self, now: float) -> Action:
        """Called at or after ``deadline``: the child did not answer in time."""
        if now < self.deadline:
            return "none"
        if self.reason is None:
            self.reason = "timeout" if now >= self._timeout_at else "interrupt"
        return "kill"
