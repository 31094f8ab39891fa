"""A session as a pure state machine: events in, effects out. No clock, no I/O, no anyio.

Theory of operation
-------------------
The I/O shell (``session.py``) feeds every event with the time it happened: ``submit``,
``interrupt``, ``send_input``, ``close``, ``restart``, ``tick`` (a deadline passed), and what
the child did: ``child_ready``, ``child_start_failed``, ``child_output``, ``child_message``,
``channel_closed``, ``child_killed`` (the shell has sent the SIGKILL the machine asked for),
``child_exited``. Each event appends effects to a list the shell takes with ``take()`` and
performs in order: ``Spawn``, ``Send``, ``Wake`` (SIGINT), ``Kill``, ``Output``, ``Show``
(a display), ``AskInput``, ``Answer``. ``deadline`` says when ``tick`` must next be called.

Children are numbered: each ``Spawn`` starts generation ``gen + 1``, and every child event
carries its generation; events of a retired child are ignored (a ``Done`` that arrives after
a kill, output of a killed child, the exit of a replaced one).

Session states (``SessionState``), derived from the child and the evals:
  starting: a child is starting and no eval waits for it;
  idle:     a live child, no eval;
  busy:     an eval runs or waits (for a child, or behind another eval);
  dead:     no child (it died while idle; the next eval starts one);
  closed:   ``close`` was called; terminal.

Eval states (``EvalState``), in order, each entered at most once:
  queued -> starting_child (the head eval waits for its child) -> sent (``Exec`` written)
  -> stopping (a kill was decided) -> done; ``done`` may follow any state.

The ladder (PROTOCOL.md section 6): the child enforces an eval's timeout itself; an
interrupt writes ``Interrupt(cell id)`` and then wakes the child with SIGINT, again every
``REWAKE`` seconds (a signal that lands just before a blocking call is lost). If no ``Done``
comes by ``timeout + grace``, or ``grace`` after the first interrupt, the child is killed and
the first stop reason is the ``cause``. A child that closes its channel is killed after
``grace`` (``"channel closed"``) unless it exits first; a corrupt channel is killed at once.

Output: per eval and stream, ``OutputCap`` lets the first half of ``output_bytes`` through,
keeps the last half, and reports the middle as dropped; displays take from the same head
budget. Between evals, each stream may pass ``output_bytes`` per ``IDLE_WINDOW`` seconds;
the excess is dropped and a marker says how much when the window ends.

Invariants (checked after every step by ``tests/unit/test_machine_props.py``):
- every submitted eval is answered exactly once, by one ``Answer``;
- ``stateLost`` is true iff the namespace the eval ran against, or the one the client had
  before it, is gone (killed, crashed, closed, restarted);
- output and displays are attributed only to the eval whose child generation and cell id
  produced them while it ran; between evals, to no eval;
- at most one eval is past ``queued``; at most one child generation is current;
- what the machine holds and emits is bounded by the caps, whatever the child writes.
"""

from __future__ import annotations

import codecs
import enum
import math
import os
import signal
from collections import deque
from typing import Any, Callable, Literal

import msgspec

from cellbox.protocol import channel as ch
from cellbox.protocol.messages import Display, ErrorInfo, EvalResult, Truncated

#: Seconds per window of the between-evals output cap.
IDLE_WINDOW = 1.0
#: Seconds between SIGINT wake-ups while an interrupted cell has not answered: a signal that
#: lands just before the main thread enters a blocking call does not wake it.
REWAKE = 0.05


class SessionState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"
    CLOSED = "closed"


class EvalState(enum.Enum):
    QUEUED = "queued"
    STARTING_CHILD = "starting_child"
    SENT = "sent"
    STOPPING = "stopping"
    DONE = "done"


class ChildState(enum.Enum):
    STARTING = "starting"
    LIVE = "live"


# --- effects ---------------------------------------------------------------------------------


class Spawn(msgspec.Struct, frozen=True):
    """Start child ``gen`` (its ``child_ready`` or ``child_start_failed`` comes back)."""

    gen: int


class Send(msgspec.Struct, frozen=True):
    """Write ``msg`` to child ``gen``'s channel, after everything written before it."""

    gen: int
    msg: ch.Msg


class Wake(msgspec.Struct, frozen=True):
    """SIGINT child ``gen``, after the writes before it (the wake-up of an ``Interrupt``)."""

    gen: int


class Kill(msgspec.Struct, frozen=True):
    """SIGKILL child ``gen`` with its whole tree; then deliver what its pipes hold and call
    ``child_killed(gen)``."""

    gen: int
    reason: str


class Output(msgspec.Struct, frozen=True):
    """Text for the client: of eval ``ev``, or printed between evals (``ev`` None) and sent
    under ``request_id``, the last eval's."""

    ev: Eval | None
    request_id: Any
    stream: str
    text: str


class Show(msgspec.Struct, frozen=True):
    """A display for the client (``ev`` None: between evals, under ``request_id``)."""

    ev: Eval | None
    request_id: Any
    display: Display


class AskInput(msgspec.Struct, frozen=True):
    ev: Eval
    prompt: str
    password: bool
    prompt_id: int


class Answer(msgspec.Struct, frozen=True):
    """The one answer of ``ev``. ``counters`` are the child's detection counters."""

    ev: Eval
    result: EvalResult
    counters: dict[str, int] = msgspec.field(default_factory=dict)


Effect = Spawn | Send | Wake | Kill | Output | Show | AskInput | Answer


# --- output caps -----------------------------------------------------------------------------


class OutputCap:
    """One stream of one eval: head streamed live, tail kept, middle dropped (PROTOCOL.md 5).

    Invariants: at most ``limit`` bytes of user output pass per stream, the marker not
    counted; ``dropped`` is exactly the number of bytes (and display bytes) that never will;
    memory stays bounded by the tail window. Text is decoded as UTF-8 incrementally.
    """

    __slots__ = ("head_left", "tail_size", "tail", "dropped", "_decoder")

    def __init__(self, limit: int) -> None:
        self.head_left = limit // 2
        self.tail_size = limit - limit // 2
        self.tail = bytearray()
        self.dropped = 0
        self._decoder: codecs.IncrementalDecoder | None = None  # most evals print nothing

    def feed(self, data: bytes) -> str:
        """Take bytes the child wrote; return the text to stream now (may be empty)."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if self.head_left > len(data):
            self.head_left -= len(data)
            return self._decoder.decode(data)
        live, data = data[: self.head_left], data[self.head_left :]
        text = self._decoder.decode(live) if live else ""
        if self.head_left or self._decoder.getstate()[0]:
            # The head ends here, on a character boundary: the bytes of a character it cuts
            # (held by the decoder, maybe since an earlier read) go to the tail, whose window
            # grows by as much, so ``limit`` bytes still pass.
            pending = self._decoder.getstate()[0]
            self.head_left = 0
            self.tail_size += len(pending)
            data = pending + data
            self._decoder.reset()
        tail = self.tail
        tail += data
        excess = len(tail) - self.tail_size
        if excess > 0:
            del tail[:excess]
            self.dropped += excess
        return text

    def admit(self, size: int) -> bool:
        """A display of ``size`` bytes: True if it fits in the head; else it is dropped."""
        if size <= self.head_left:
            self.head_left -= size
            return True
        self.dropped += size
        return False

    def finish(self) -> tuple[str, str]:
        """End of the eval: ``(marker, tail_text)``; the marker is empty if nothing was dropped."""
        tail = bytes(self.tail)
        self.tail.clear()
        if self.dropped:
            # Start the window on a character boundary: skip UTF-8 continuation bytes.
            start = 0
            while start < len(tail) and start < 4 and (tail[start] & 0xC0) == 0x80:
                start += 1
            self.dropped += start
            tail = tail[start:]
            return marker(self.dropped), tail.decode("utf-8", "replace")
        if self._decoder is None:
            return "", ""
        return "", self._decoder.decode(tail, final=True)


def marker(dropped: int) -> str:
    return f"\n[cellbox: {dropped} bytes of output dropped here]\n"


class IdleCap:
    """One stream between evals: ``limit`` bytes per window of ``IDLE_WINDOW`` seconds."""

    __slots__ = ("limit", "left", "dropped", "window_end", "_decoder")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit
        self.dropped = 0
        self.window_end = -math.inf
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes, now: float) -> tuple[str, str]:
        """``(marker of the window that ended, text to send now)``."""
        ended = self.roll(now)
        if now >= self.window_end:
            self.window_end = now + IDLE_WINDOW
        passed = data[: self.left]
        self.left -= len(passed)
        self.dropped += len(data) - len(passed)
        return ended, self._decoder.decode(passed, final=len(passed) < len(data))

    def admit(self, size: int, now: float) -> tuple[str, bool]:
        ended = self.roll(now)
        if now >= self.window_end:
            self.window_end = now + IDLE_WINDOW
        if size <= self.left:
            self.left -= size
            return ended, True
        self.dropped += size
        return ended, False

    def roll(self, now: float) -> str:
        """At or after the window's end: a fresh budget, and the marker if bytes were dropped."""
        if now < self.window_end:
            return ""
        self.left = self.limit
        dropped, self.dropped = self.dropped, 0
        return marker(dropped) if dropped else ""

    @property
    def deadline(self) -> float:
        return self.window_end if self.dropped else math.inf


# --- evals -----------------------------------------------------------------------------------


class Eval(msgspec.Struct, eq=False):
    """One ``session/eval`` from arrival to its one answer. ``key`` identifies the request
    (for cancellation); ``sink`` is the shell's (e.g. MCP progress), never used here."""

    key: Any
    request_id: Any
    code: str
    timeout: float | None = None  # None: the session's default; 0: none
    silent: bool = False
    allow_stdin: bool = False
    collect: bool = True
    notify: bool = True
    sink: Callable[[str, str], None] | None = None
    on_answer: list[Callable[[Eval], None]] = msgspec.field(default_factory=list)
    state: EvalState = EvalState.QUEUED
    no_reply: bool = False  # MCP notifications/cancelled: answer nobody
    result: EvalResult | None = None
    # set when it starts running
    cell_id: int = 0
    count: int = 0
    started: float = 0.0
    lost: bool = False  # the namespace the client had before it is gone
    interrupted: bool = False
    waiting_input: bool = False
    prompts: int = 0  # the ``input()`` prompts asked so far (the last one's id)
    stop_reason: Literal["timeout", "interrupt"] | None = None
    timeout_at: float = math.inf
    deadline: float = math.inf  # the kill
    rewake_at: float = math.inf  # the next SIGINT wake-up of an interrupted cell
    caps: dict[str, OutputCap] = msgspec.field(default_factory=dict)
    out: dict[str, list[str]] = msgspec.field(default_factory=dict)
    displays: list[Display] = msgspec.field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.state in (EvalState.STARTING_CHILD, EvalState.SENT, EvalState.STOPPING)


class Config(msgspec.Struct, frozen=True):
    """A session's settings: the default timeout (None or 0: none), the kill grace, the
    output cap per eval and stream, and the CPU limit (to name a SIGKILL we did not send)."""

    timeout: float | None = None
    grace: float = 2.0
    output_bytes: int = 1 << 20
    cpu_seconds: float | None = None


class _Child(msgspec.Struct):
    gen: int
    state: ChildState = ChildState.STARTING
    pid: int | None = None
    python: str = ""
    channel_deadline: float = math.inf  # its channel closed: kill it then


def exit_cause(status: int, *, cpu_used: float = 0.0, cpu_limit: float | None = None,
               oom: bool | None = None) -> str:
    """Name a wait status as PROTOCOL.md's ``cause`` does (``exit 3``, ``signal SIGSEGV``,
    ``cpu``, ``memory``). A SIGKILL the supervisor did not send is the CPU hard limit if the
    child used its CPU allowance, else the kernel's OOM killer (PROTOCOL.md); ``oom`` (the
    child's cgroup counted an OOM kill) names any death ``memory``."""
    if oom:
        return "memory"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "cpu"
        if sig == signal.SIGKILL:
            return "cpu" if cpu_limit and cpu_used >= cpu_limit else "memory"
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    return f"status {status}"


def _display_size(display: Display) -> int:
    return sum(len(v) if isinstance(v, str) else 64 for v in display.data.values())


class SessionMachine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.closed: str | None = None  # the close cause, once closed
        self.execution_count = 0
        self.queue: deque[Eval] = deque()
        self.running: Eval | None = None
        self.child: _Child | None = None
        self.gen = 0
        self._cells = 0
        self._lost = False  # the child died while idle; the next eval reports it
        self._last_request_id: Any = None
        self._last_notify = True
        self._idle = {"stdout": IdleCap(config.output_bytes), "stderr": IdleCap(config.output_bytes)}
        self._effects: list[Effect] = []
        # Children killed whose kill the shell has not confirmed: gen -> (reason, their eval).
        self._dying: dict[int, tuple[str, Eval | None]] = {}

    # -- what the shell reads ----------------------------------------------------------------

    def take(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    @property
    def state(self) -> SessionState:
        if self.closed is not None:
            return SessionState.CLOSED
        if self.running is not None or self.queue:
            return SessionState.BUSY
        child = self.child
        if child is None:
            return SessionState.DEAD
        return SessionState.IDLE if child.state is ChildState.LIVE else SessionState.STARTING

    @property
    def pid(self) -> int | None:
        """The live child's pid (None while it starts or when there is none)."""
        child = self.child
        return child.pid if child is not None and child.state is ChildState.LIVE else None

    @property
    def live_gen(self) -> int | None:
        child = self.child
        return child.gen if child is not None and child.state is ChildState.LIVE else None

    @property
    def deadline(self) -> float:
        """When ``tick`` must be called next (``inf``: never)."""
        d = min(self._idle["stdout"].deadline, self._idle["stderr"].deadline)
        if self.running is not None:
            d = min(d, self.running.deadline, self.running.rewake_at)
        if self.child is not None:
            d = min(d, self.child.channel_deadline)
        return d

    # -- requests ----------------------------------------------------------------------------

    def start(self) -> int:
        """Start the session's first child; returns its generation."""
        return self._spawn()

    def submit(self, ev: Eval, now: float) -> None:
        if self.closed is not None:
            self._answer_dropped(ev, "killed", self.closed, state_lost=True)
            return
        self.queue.append(ev)
        self._advance(now)

    def interrupt(self, ev: Eval | None, now: float) -> bool:
        """Interrupt ``ev`` (None: the running eval); a queued one is dropped. True iff one
        was hit."""
        if ev is None:
            ev = self.running
            if ev is None:
                return False
        match ev.state:
            case EvalState.QUEUED:
                self.queue.remove(ev)
                self._answer_dropped(ev, "interrupted", "interrupt", state_lost=False)
            case EvalState.STARTING_CHILD:
                # It never ran; the child keeps starting for the evals behind it.
                self.running = None
                self._answer_dropped(ev, "interrupted", "interrupt", state_lost=self._take_lost())
                self._advance(now)
            case EvalState.SENT:
                ev.interrupted = True
                if ev.stop_reason is None:
                    ev.stop_reason = "interrupt"
                ev.deadline = min(ev.deadline, now + self.config.grace)
                assert self.child is not None
                self._effects.append(Send(self.child.gen, ch.Interrupt(id=ev.cell_id)))
                self._effects.append(Wake(self.child.gen))
                ev.rewake_at = now + REWAKE
            case EvalState.STOPPING:
                pass  # already being killed; its answer is on the way
            case EvalState.DONE:
                return False
        return True

    def send_input(self, ev: Eval, text: str | None, prompt_id: int | None = None) -> bool:
        """Answer the ``input()`` ``ev`` waits on; False if it waits for none, or for
        another prompt than ``prompt_id`` (None: whichever it waits on)."""
        if ev is not self.running or ev.state is not EvalState.SENT or not ev.waiting_input:
            return False
        if prompt_id is not None and prompt_id != ev.prompts:
            return False
        ev.waiting_input = False
        assert self.child is not None
        self._effects.append(Send(self.child.gen, ch.InputReply(text=text)))
        return True

    def close(self, cause: str, now: float) -> None:
        """Answer every eval (``killed``, ``cause``) and kill the child; terminal."""
        if self.closed is not None:
            return
        self.closed = cause
        self._drop_queue(cause)
        self._stop_child(cause, now)

    def restart(self, now: float) -> int:
        """Answer every eval (``killed``, ``"restart"``), kill the child, start a fresh one
        with an empty namespace; returns its generation."""
        self._drop_queue("restart")
        self._stop_child("restart", now)
        self.execution_count = 0
        self._lost = False
        return self._spawn()

    def tick(self, now: float) -> None:
        """Deadlines: the ladder's kill, the channel-closed grace, the idle output window."""
        for stream, cap in self._idle.items():
            if now >= cap.deadline:
                self._idle_text(stream, cap.roll(now))
        child = self.child
        if child is None:
            return
        if now >= child.channel_deadline:
            self._kill(child, "channel closed", now)
            return
        ev = self.running
        if ev is None or ev.state is not EvalState.SENT:
            return
        if now >= ev.deadline:
            if ev.stop_reason is None:
                ev.stop_reason = "timeout" if now >= ev.timeout_at else "interrupt"
            self._kill(child, ev.stop_reason, now)
        elif now >= ev.rewake_at:
            self._effects.append(Wake(child.gen))
            ev.rewake_at = now + REWAKE

    # -- the child ---------------------------------------------------------------------------

    def child_ready(self, gen: int, pid: int, python: str, now: float) -> None:
        child = self.child
        if child is None or child.gen != gen:
            self._effects.append(Kill(gen, "replaced"))  # a stale start: not ours any more
            return
        if child.state is not ChildState.STARTING:
            return
        child.state, child.pid, child.python = ChildState.LIVE, pid, python
        self._advance(now)

    def child_start_failed(self, gen: int, message: str, now: float) -> None:
        child = self.child
        if child is None or child.gen != gen or child.state is not ChildState.STARTING:
            return
        self.child = None
        ev = self.running
        if ev is not None and ev.state is EvalState.STARTING_CHILD:
            self.running = None
            error = ErrorInfo(type="SessionStartFailed", message=message, traceback="")
            self._answer(ev, "killed", "start failed", state_lost=True, error=error, now=now)
        self._advance(now)

    def child_output(self, gen: int, stream: str, data: bytes, now: float) -> None:
        ev = self.running
        if not self._current(gen):
            dying = self._dying.get(gen)
            ev = dying[1] if dying is not None else None
            if ev is not None:  # the last words of a killed child belong to its eval
                self._emit(ev, stream, ev.caps[stream].feed(data))
            return
        if ev is not None and ev.state is EvalState.SENT:
            self._emit(ev, stream, ev.caps[stream].feed(data))
            return
        ended, text = self._idle[stream].feed(data, now)
        self._idle_text(stream, ended + text)

    def child_message(self, gen: int, msg: Any, now: float) -> None:
        """A message from child ``gen``; the shell delivers the pipes' output written before
        it first. Messages of a killed child are ignored: its eval is answered ``killed``."""
        if not self._current(gen):
            return
        ev = self.running
        if ev is not None and ev.state is not EvalState.SENT:
            ev = None
        match msg:
            case ch.Done(id=cell) if ev is not None and cell == ev.cell_id:
                self._finish(ev, msg, now)
            case ch.DisplayEvent(id=cell, display=display):
                size = _display_size(display)
                if ev is not None and cell == ev.cell_id:
                    if ev.caps["stdout"].admit(size):
                        if ev.collect:
                            ev.displays.append(display)
                        self._effects.append(Show(ev, ev.request_id, display))
                else:
                    ended, ok = self._idle["stdout"].admit(size, now)
                    self._idle_text("stdout", ended)
                    if ok and self._last_notify:
                        self._effects.append(Show(None, self._last_request_id, display))
            case ch.InputRequest(id=cell, prompt=prompt, password=password):
                if ev is not None and cell == ev.cell_id:
                    ev.waiting_input = True
                    ev.prompts += 1
                    self._effects.append(AskInput(ev, prompt, password, ev.prompts))
            case _:
                pass  # a stale Done; editor replies are the shell's

    def channel_closed(self, gen: int, corrupt: bool, now: float) -> None:
        child = self.child
        if child is None or child.gen != gen or child.state is not ChildState.LIVE:
            return  # a child that fails while starting is the launcher's to report
        if corrupt:
            self._kill(child, "corrupt channel", now)
        else:
            child.channel_deadline = min(child.channel_deadline, now + self.config.grace)

    def child_killed(self, gen: int, now: float) -> None:
        """The shell has killed child ``gen`` (after a ``Kill``) and delivered its output."""
        dying = self._dying.pop(gen, None)
        if dying is not None and dying[1] is not None:
            self._answer(dying[1], "killed", dying[0], state_lost=True, now=now)

    def child_exited(self, gen: int, status: int, now: float, cpu_used: float = 0.0,
                     oom: bool | None = None) -> None:
        """Child ``gen`` was reaped with wait status ``status``; the shell has delivered
        what its pipes held; ``oom``: whether its cgroup saw an OOM kill (None: unknown).
        Exits of killed or replaced children are ignored."""
        child = self.child
        if child is None or child.gen != gen:
            return
        cause = exit_cause(status, cpu_used=cpu_used, cpu_limit=self.config.cpu_seconds, oom=oom)
        if child.state is ChildState.STARTING:
            self.child_start_failed(gen, f"the child exited before it started ({cause})", now)
            return
        self.child = None
        ev = self.running
        if ev is not None and ev.state is EvalState.SENT:
            self.running = None
            self._answer(ev, "killed", cause, state_lost=True, now=now)
        elif self.closed is None:
            self._lost = True  # died while idle: the next eval says so
        self._advance(now)

    # -- internals ---------------------------------------------------------------------------

    def _current(self, gen: int) -> bool:
        child = self.child
        return child is not None and child.gen == gen

    def _spawn(self) -> int:
        self.gen += 1
        self.child = _Child(self.gen)
        self._effects.append(Spawn(self.gen))
        return self.gen

    def _take_lost(self) -> bool:
        lost, self._lost = self._lost, False
        return lost

    def _advance(self, now: float) -> None:
        """Start the next eval if the session can."""
        if self.closed is not None:
            return
        ev = self.running
        if ev is not None:
            child = self.child
            if ev.state is EvalState.STARTING_CHILD and child is not None and child.state is ChildState.LIVE:
                self._send(ev, child, now)
            return
        if not self.queue:
            return
        child = self.child
        if child is None:
            self._spawn()
            child = self.child
            assert child is not None
        if child.state is ChildState.STARTING:
            ev = self.queue.popleft()
            ev.state = EvalState.STARTING_CHILD
            self.running = ev
            return
        self._send(self.queue.popleft(), child, now)

    def _send(self, ev: Eval, child: _Child, now: float) -> None:
        timeout = self.config.timeout if ev.timeout is None else ev.timeout
        timeout = timeout or None
        count = self.execution_count + 1
        if not ev.silent:
            self.execution_count = count
        self._cells += 1
        limit = self.config.output_bytes
        for stream, cap in self._idle.items():  # the window's marker goes before the eval
            if cap.dropped:
                self._idle_text(stream, cap.roll(math.inf))
        ev.state = EvalState.SENT
        ev.cell_id, ev.count, ev.started = self._cells, count, now
        ev.lost = self._take_lost()
        ev.caps = {"stdout": OutputCap(limit), "stderr": OutputCap(limit)}
        ev.out = {"stdout": [], "stderr": []}
        if timeout is not None:
            ev.timeout_at = now + timeout
            ev.deadline = ev.timeout_at + self.config.grace
        self.running = ev
        self._last_request_id, self._last_notify = ev.request_id, ev.notify
        self._effects.append(
            Send(
                child.gen,
                ch.Exec(
                    id=ev.cell_id,
                    code=ev.code,
                    execution_count=count,
                    silent=ev.silent,
                    allow_stdin=ev.allow_stdin,
                    timeout=timeout,
                    repr_limit=limit,
                ),
            )
        )

    def _stop_child(self, cause: str, now: float) -> None:
        """Close and restart: the child goes, and the eval waiting for one is answered."""
        ev = self.running
        if ev is not None and ev.state is EvalState.STARTING_CHILD:
            self.running = None
            self._answer_dropped(ev, "killed", cause, state_lost=True)
        child = self.child
        if child is None:
            return
        if child.state is ChildState.STARTING:
            # Not started yet: when it is, ``child_ready`` finds it stale and kills it.
            self.child = None
            return
        self._kill(child, cause, now, lost_if_idle=False)

    def _kill(self, child: _Child, reason: str, now: float, *, lost_if_idle: bool = True) -> None:
        """Retire ``child`` now; its eval is answered when the shell confirms the kill, and
        the next eval may start at once in a fresh child."""
        ev = self.running
        if ev is not None and ev.state is EvalState.SENT:
            ev.state = EvalState.STOPPING
            self.running = None
        else:
            ev = None
            if lost_if_idle and self.closed is None:
                self._lost = True
        self.child = None
        self._dying[child.gen] = (reason, ev)
        self._effects.append(Kill(child.gen, reason))
        self._advance(now)

    def _drop_queue(self, cause: str) -> None:
        while self.queue:
            self._answer_dropped(self.queue.popleft(), "killed", cause, state_lost=True)

    def _emit(self, ev: Eval, stream: str, text: str) -> None:
        if not text:
            return
        if ev.collect:
            ev.out[stream].append(text)
        self._effects.append(Output(ev, ev.request_id, stream, text))

    def _idle_text(self, stream: str, text: str) -> None:
        if text and self._last_notify:
            self._effects.append(Output(None, self._last_request_id, stream, text))

    def _finish(self, ev: Eval, done: ch.Done, now: float) -> None:
        status, cause = "ok", None
        if done.error is not None:
            status = "error"
            if done.stopped == "timeout":
                status, cause = "timeout", "timeout"
            elif done.stopped == "interrupt" or (ev.interrupted and done.stopped):
                status, cause = "interrupted", "interrupt"
        self.running = None
        if done.fatal:
            # The child asked to be replaced (e.g. MemoryError under a memory limit).
            assert self.child is not None
            self._answer(ev, "killed", done.fatal, state_lost=True, done=done, now=now)
            self._kill(self.child, done.fatal, now, lost_if_idle=False)
            return
        self._answer(ev, status, cause, state_lost=ev.lost, done=done, now=now)
        self._advance(now)

    def _answer(
        self,
        ev: Eval,
        status: str,
        cause: str | None,
        *,
        state_lost: bool,
        now: float,
        done: ch.Done | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        """The one builder of results for evals that started (or waited for their child)."""
        truncated = Truncated()
        stdout = stderr = None
        if ev.caps:
            for stream in ("stdout", "stderr"):
                mark, tail = ev.caps[stream].finish()
                self._emit(ev, stream, mark)
                self._emit(ev, stream, tail)
            truncated = Truncated(stdout=ev.caps["stdout"].dropped, stderr=ev.caps["stderr"].dropped)
            if ev.collect:
                stdout, stderr = "".join(ev.out["stdout"]), "".join(ev.out["stderr"])
        count = None  # an eval that never started has none
        if ev.caps:  # silent: the count unchanged, reported as it stands (as Jupyter)
            count = ev.count - 1 if ev.silent else ev.count
        result = EvalResult(
            status=status,  # type: ignore[arg-type]
            execution_count=count,
            value=done.value if done is not None else None,
            error=done.error if done is not None else error,
            stdout=stdout,
            stderr=stderr,
            displays=(ev.displays if ev.collect else None) if ev.caps else None,
            truncated=truncated,
            warnings=done.warnings if done is not None else [],
            state_lost=state_lost or ev.lost,
            cause=cause,
            duration_ms=round((now - ev.started) * 1000, 3) if ev.caps else 0.0,
        )
        self._deliver(ev, result, done.counters if done is not None else {})

    def _answer_dropped(self, ev: Eval, status: str, cause: str, *, state_lost: bool) -> None:
        """The answer of an eval that never ran."""
        result = EvalResult(status=status, execution_count=None, state_lost=state_lost, cause=cause)  # type: ignore[arg-type]
        self._deliver(ev, result, {})

    def _deliver(self, ev: Eval, result: EvalResult, counters: dict[str, int]) -> None:
        assert ev.state is not EvalState.DONE, "an eval is answered once"
        ev.state = EvalState.DONE
        ev.result = result
        self._effects.append(Answer(ev, result, counters))
