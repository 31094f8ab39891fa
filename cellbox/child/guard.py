"""What a session takes over in its process, and how its namespace is kept usable.

``install`` replaces, for the life of the session: ``sys.stdout``/``sys.stderr`` (capture
writers), ``builtins.input`` and ``getpass.getpass`` (the stdin gate), ``builtins.display``,
the SIGALRM handler (cell timeouts), and the loop's exception handler and task factory
(``background.py``). ``uninstall`` puts every one of them back.

``protect(namespace)`` runs before every cell and restores exactly this, so one cell cannot
break the next (``globals().clear()`` included); the builtins part (``restore_builtins``) runs
again as soon as a cell's code ends, before the engine builds its result:

- ``__builtins__`` is the real ``builtins`` module and ``__name__`` is ``"__main__"``;
- names deleted from the ``builtins`` module since ``install`` are put back;
- a global ``print`` that is not callable is deleted (the builtin shows through again), and a
  non-callable ``builtins.print`` is set back to the original;
- ``sys.stdout``/``sys.stderr`` without a callable ``write`` (``None``, ...) get the capture
  writers back;
- and, for a cell with a timeout, the SIGALRM handler (``arm_timer``).

Callable replacements (``print = my_logger``, ``sys.stdout = io.StringIO()``) are the user's
intent and are kept.
"""

from __future__ import annotations

import asyncio
import builtins
import signal
import sys
from collections.abc import Callable
from typing import Any

from cellbox.child.background import BackgroundReporter
from cellbox.child.capture import StreamWriter

_MISSING = object()


class ProcessGuard:
    def __init__(self, stdout: StreamWriter, stderr: StreamWriter, *,
                 input: Callable[..., str], getpass: Callable[..., str],
                 display: Callable[..., None]) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self._replacements = {"input": input, "getpass": getpass, "display": display}
        self.installed = False
        self._saved: dict[str, Any] = {}
        self._builtins: dict[str, Any] = {}
        self._print = builtins.print
        self._on_alarm: Callable[..., None] | None = None

    def install(self, loop: asyncio.AbstractEventLoop, on_alarm: Callable[..., None],
                background: BackgroundReporter) -> None:
        import getpass

        self._saved = {
            "stdout": sys.stdout, "stderr": sys.stderr, "input": builtins.input,
            "display": builtins.__dict__.get("display", _MISSING),
            "getpass": getpass.getpass, "sigalrm": signal.getsignal(signal.SIGALRM),
            "handler": loop.get_exception_handler(), "factory": loop.get_task_factory(),
            "loop": loop,
        }
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        builtins.input = self._replacements["input"]
        builtins.display = self._replacements["display"]  # type: ignore[attr-defined]
        getpass.getpass = self._replacements["getpass"]
        self._on_alarm = on_alarm
        signal.signal(signal.SIGALRM, on_alarm)
        loop.set_exception_handler(background.exception_handler)
        background.previous_factory = self._saved["factory"]
        loop.set_task_factory(background.task_factory)
        self._builtins = dict(builtins.__dict__)
        self._print = builtins.print
        self.installed = True

    def uninstall(self) -> None:
        import getpass

        saved = self._saved
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved["sigalrm"])
        loop = saved["loop"]
        if not loop.is_closed():
            loop.set_exception_handler(saved["handler"])
            loop.set_task_factory(saved["factory"])
        sys.stdout = saved["stdout"]
        sys.stderr = saved["stderr"]
        builtins.input = saved["input"]
        if saved["display"] is _MISSING:
            builtins.__dict__.pop("display", None)
        else:
            builtins.display = saved["display"]  # type: ignore[attr-defined]
        getpass.getpass = saved["getpass"]
        self.installed = False

    def arm_timer(self, seconds: float) -> None:
        """Start the cell timer (SIGALRM after ``seconds``); the handler is put back first if
        user code replaced it, so a cell timeout is always delivered."""
        if signal.getsignal(signal.SIGALRM) is not self._on_alarm:
            signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    @staticmethod
    def disarm_timer() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    def protect(self, ns: dict[str, Any]) -> None:
        """Restore what the module docstring lists; cheap when nothing changed."""
        if ns.get("__builtins__") is not builtins:
            ns["__builtins__"] = builtins
        if ns.get("__name__") != "__main__":
            ns["__name__"] = "__main__"
        if "print" in ns and not callable(ns["print"]):
            del ns["print"]
        self.restore_builtins()

    def restore_builtins(self) -> None:
        """Put back builtins the cell deleted and a non-callable ``builtins.print``. Also run
        when a cell ends: the engine's own code (and the rest of the process) needs them."""
        bdict = builtins.__dict__
        if self._builtins and not self._builtins.keys() <= bdict.keys():
            for name, value in self._builtins.items():
                bdict.setdefault(name, value)
        if not callable(bdict.get("print")):
            bdict["print"] = self._print
        if self.installed:
            if not callable(getattr(sys.stdout, "write", None)):
                sys.stdout = self.stdout
            if not callable(getattr(sys.stderr, "write", None)):
                sys.stderr = self.stderr
