"""``cellbox console``: an interactive terminal REPL whose cells run in a cellbox session.

What a person sees (IPython's prompts, because cells have execution counts)::

    In [1]: import asyncio
    In [2]: await asyncio.sleep(0, 5)
    Out[2]: 5
    In [3]: def f(x):
       ...:     return x * 2
       ...:
    In [4]:

- A line is run when ``session/isComplete`` says the input is complete; otherwise a
  continuation prompt ``...:`` follows, pre-filled with the indent the server suggests. An
  empty (or blank) continuation line ends a block. Invalid input is run anyway, so the
  ``SyntaxError`` is reported by the session like any error.
- Output streams as it arrives; the value of the last expression is shown as ``Out[n]:``
  with its repr; tracebacks go to stderr. When a result says the interpreter was killed or
  the state is lost, a one-line ``[cellbox] ...`` notice says so.
- Ctrl-C while a cell runs interrupts it (``session/interrupt``; the server kills the child
  if the code ignores it); at the prompt it discards the line, prints ``KeyboardInterrupt``
  and shows a new prompt. Ctrl-D at a prompt (or ``exit``/``quit``) ends the console: the
  server closes every session and exits before ``run_console`` returns 0.
- ``input()`` in a cell reads a line from the terminal. Tab completes from the session's
  live namespace (``session/complete``). History is kept in ``~/.cellbox_history``.
- Output that a session prints between cells (a background task) is written at once, even
  over the prompt, as in ``python -m asyncio``.

Structure: the main thread owns the terminal (``input()`` with ``readline``, every write of
a cell's output, SIGINT as ``KeyboardInterrupt``); the async client runs in an anyio loop in
a portal thread. A running cell's events travel from the loop to the main thread through a
queue, so Ctrl-C always lands in the main thread, which answers it with an interrupt request.
"""

from __future__ import annotations

import getpass
import os
import queue
import sys
from functools import partial
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from cellbox.client import EvalStream, ServerGone, Session, connect
from cellbox.protocol import messages as m
from cellbox.protocol.errors import CellboxError

try:
    import readline
except ImportError:  # no readline (e.g. Windows): plain input(), no history or completion
    readline = None  # type: ignore[assignment]

HISTORY_FILE = "~/.cellbox_history"
_EXIT_WORDS = frozenset({"exit", "exit()", "quit", "quit()"})
# Word delimiters for completion: a dotted name (``os.pa``) is one word.
_DELIMS = " \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?"


def run_console(timeout: float | None = None) -> int:
    """Run the REPL on the terminal until Ctrl-D or ``exit``; return the exit status.

    ``timeout``: seconds per cell; None or 0: none (Ctrl-C is the way to stop a cell).
    Returns 0 on a normal exit, 1 if the server died, 130 if interrupted while starting.
    Every process the console started is gone when it returns.
    """
    history = _setup_readline()
    try:
        with start_blocking_portal() as portal:
            console = _Console(portal)
            with portal.wrap_async_context_manager(
                connect("--log-level", "error", on_notification=console.on_notification)
            ) as client:
                session = portal.call(
                    partial(client.create_session, name="console", limits={"timeout": timeout or 0})
                )
                console.session = session
                return console.loop()
    except KeyboardInterrupt:
        _write(sys.stderr, "\nKeyboardInterrupt\n")
        return 130
    except CellboxError as exc:
        _write(sys.stderr, f"[cellbox] {exc}\n")
        return 1
    finally:
        _save_history(history)


class _Console:
    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self.session: Session | None = None
        self.count = 1  # the execution count the next cell will get
        self.lines: list[str] = []  # the lines of the cell being typed
        self.indent = ""  # pre-filled on the next continuation line
        self.running: queue.SimpleQueue[Any] | None = None  # the running cell's events
        self.events: EvalStream | None = None  # set in the loop thread while a cell runs
        self.interrupt_early = False
        self.matches: list[str] = []
        self.at_line_start = True

    # -- the loop (main thread) ------------------------------------------------------------

    def loop(self) -> int:
        assert self.session is not None
        s = self.session
        _write(
            sys.stdout,
            f"cellbox console: Python {s.python or sys.version.split()[0]}, session {s.id} (pid {s.pid}).\n"
            "Top-level await works; Ctrl-C interrupts a cell; Ctrl-D exits.\n",
        )
        if readline is not None:
            readline.set_completer(self.complete)
        while True:
            try:
                code = self.read_cell()
            except EOFError:
                _write(sys.stdout, "\n")
                return 0
            except KeyboardInterrupt:
                _write(sys.stdout, "\nKeyboardInterrupt\n")
                continue
            except ServerGone as exc:
                _write(sys.stderr, f"[cellbox] {exc}\n")
                return 1
            if not code.strip():
                continue
            if code.strip() in _EXIT_WORDS:
                return 0
            try:
                self.run_cell(code)
            except ServerGone as exc:
                self.newline_if_needed()
                _write(sys.stderr, f"[cellbox] {exc}\n")
                return 1

    def read_cell(self) -> str:
        """Read lines until the server says the cell is complete; return its code."""
        assert self.session is not None
        self.lines = []
        self.indent = ""
        prompt = f"In [{self.count}]: "
        more = " " * max(0, len(prompt) - 5) + "...: "
        self.at_line_start = True
        while True:
            line = self.input(more if self.lines else prompt, self.indent)
            if self.lines and not line.strip():
                line = ""  # a blank continuation line ends the block
            self.lines.append(line)
            code = "\n".join(self.lines)
            if not code.strip():
                return ""
            try:
                verdict = self.portal.call(self.session.is_complete, code)
            except ServerGone:
                raise
            except CellboxError:
                return code
            if verdict.status != "incomplete":
                return code
            self.indent = verdict.indent

    def input(self, prompt: str, prefill: str = "") -> str:
        if readline is None or not prefill:
            return input(prompt)

        def hook() -> None:
            readline.insert_text(prefill)
            readline.redisplay()

        readline.set_pre_input_hook(hook)
        try:
            return input(prompt)
        finally:
            readline.set_pre_input_hook()

    def run_cell(self, code: str) -> None:
        """Run one cell, showing its events as they come; Ctrl-C interrupts it."""
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.running = events
        self.interrupt_early = False
        self.portal.start_task_soon(self._cell, code, events)
        item: Any = None
        try:
            while True:
                try:
                    if item is None:
                        item = events.get()
                    if self.show(item):
                        return
                    item = None
                except KeyboardInterrupt:
                    if isinstance(item, m.InputRequestNotification):
                        item = None  # the interrupt answers the input() too
                    self.interrupt()
        finally:
            self.running = None

    def interrupt(self) -> None:
        try:
            self.portal.call(self._interrupt)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C while asking: the first request is on its way
        except CellboxError:
            pass  # the cell ended, or the server is gone: the result says which

    def show(self, item: Any) -> bool:
        """Write one event of the running cell; True once it was the result."""
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, m.OutputNotification):
            _write(sys.stdout if item.stream == "stdout" else sys.stderr, item.text)
            self.at_line_start = item.text.endswith("\n")
        elif isinstance(item, m.DisplayNotification):
            self.newline_if_needed()
            _write(sys.stdout, _display_text(item.data) + "\n")
        elif isinstance(item, m.InputRequestNotification):
            self.answer_input(item)
        elif isinstance(item, m.EvalResult):
            self.show_result(item)
            return True
        return False

    def answer_input(self, request: m.InputRequestNotification) -> None:
        assert self.session is not None
        try:
            text = getpass.getpass(request.prompt) if request.password else input(request.prompt)
        except EOFError:
            text = ""
            _write(sys.stdout, "\n")
        self.at_line_start = True
        self.portal.call(self.session.send_input, request.request_id, text)

    def show_result(self, result: m.EvalResult) -> None:
        self.newline_if_needed()
        count = result.execution_count
        if result.value is not None:
            text = result.value.repr
            label = f"Out[{count if count is not None else self.count}]: "
            _write(sys.stdout, label + ("\n" if "\n" in text else "") + text + "\n")
        if result.error is not None:
            tb = result.error.traceback or f"{result.error.type}: {result.error.message}\n"
            _write(sys.stderr, tb if tb.endswith("\n") else tb + "\n")
        for w in result.warnings:
            _write(sys.stderr, f"[cellbox] warning (line {w.line}): {w.message}\n")
        notice = _notice(result)
        if notice:
            _write(sys.stderr, f"[cellbox] {notice}\n")
        if count is not None:
            self.count = count + 1

    def newline_if_needed(self) -> None:
        if not self.at_line_start:
            _write(sys.stdout, "\n")
            self.at_line_start = True

    # -- the loop thread -------------------------------------------------------------------

    async def _cell(self, code: str, events: queue.SimpleQueue[Any]) -> None:
        assert self.session is not None
        try:
            async with self.session.stream(code, allow_stdin=True, collect_output=False) as stream:
                self.events = stream
                if self.interrupt_early:
                    await stream.interrupt()
                async for event in stream:
                    events.put(event)
        except Exception as exc:  # ServerGone, mostly: the main thread reports it
            events.put(exc)
        finally:
            self.events = None

    async def _interrupt(self) -> None:
        events = self.events
        if events is None:
            self.interrupt_early = True  # the eval is not sent yet: interrupt it once it is
            return
        # The server answers False for an eval it is just starting (its child not told yet);
        # ask again until it is hit or over, for at most a second.
        with anyio.move_on_after(1):
            while not await events.interrupt() and events.result is None and self.events is events:
                await anyio.sleep(0.02)

    def on_notification(self, method: str, params: Any) -> None:
        """Output a session prints between cells (background tasks): written at once."""
        if isinstance(params, m.OutputNotification):
            running = self.running
            if running is not None:
                running.put(params)
            else:
                _write(sys.stdout if params.stream == "stdout" else sys.stderr, params.text)
        elif isinstance(params, m.DisplayNotification):
            _write(sys.stdout, _display_text(params.data) + "\n")

    # -- completion (main thread, called by readline) ---------------------------------------

    def complete(self, text: str, state: int) -> str | None:
        if state == 0:
            self.matches = []
            try:
                self.matches = self._completions(text)
            except BaseException:  # readline swallows errors; never break the prompt
                self.matches = []
        return self.matches[state] if state < len(self.matches) else None

    def _completions(self, text: str) -> list[str]:
        assert readline is not None and self.session is not None
        line = readline.get_line_buffer()
        begin, end = readline.get_begidx(), readline.get_endidx()
        if not line[:end].strip():
            readline.insert_text("    ")  # Tab at the start of a line indents
            readline.redisplay()
            return [""]
        before = "".join(ln + "\n" for ln in self.lines)
        session = self.session

        async def ask() -> m.CompleteResult:
            with anyio.fail_after(2):
                return await session.complete(before + line, len(before) + end)

        reply = self.portal.call(ask)
        start = reply.cursor_start - len(before)
        out: list[str] = []
        for match in reply.matches:
            if start >= begin:
                candidate = line[begin:start] + match
            else:
                lead = line[start:begin]
                if not match.startswith(lead):
                    continue
                candidate = match[len(lead) :]
            if candidate.startswith(text) and candidate not in out:
                out.append(candidate)
        return out


def _notice(result: m.EvalResult) -> str:
    if result.status == "killed":
        return (
            f"the interpreter was killed ({result.cause or 'unknown cause'}) and replaced: "
            "every variable and import is gone"
        )
    if result.state_lost:
        return "the interpreter had died and was replaced before this cell: earlier variables are gone"
    if result.status == "timeout":
        return "the cell hit its timeout and was stopped; variables are kept"
    return ""


def _display_text(data: dict[str, Any]) -> str:
    text = data.get("text/plain")
    if isinstance(text, str):
        return text
    kinds = ", ".join(sorted(data)) or "empty"
    return f"<display: {kinds}>"


def _write(stream: Any, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass  # the terminal went away; the console ends on the next read


def _setup_readline() -> str | None:
    if readline is None:
        return None
    path = os.path.expanduser(HISTORY_FILE)
    try:
        readline.read_history_file(path)
    except (OSError, ValueError):
        pass
    readline.set_history_length(10000)
    readline.set_completer_delims(_DELIMS)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    return path


def _save_history(path: str | None) -> None:
    if readline is None or path is None:
        return
    try:
        readline.write_history_file(path)
    except (OSError, ValueError):
        pass
