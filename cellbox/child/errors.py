"""User exceptions as the client reads them: ``ErrorInfo`` with a CPython-style traceback.

Engine frames (code in the ``cellbox`` package) are removed from the traceback of the
exception and of everything it chains to (``__cause__``, ``__context__``, the members of an
``ExceptionGroup``), so a report shows only user code: ``File "<cell 3>", line 1, in
<module>`` with the cell's source line (registered in ``linecache`` by the compiler), chained
causes and ``add_note`` notes. The exceptions are changed in place, so ``sys.last_traceback``
and later re-raises see the same clean traceback.
"""

from __future__ import annotations

import os
from types import TracebackType

from cellbox.child.capture import clean
from cellbox.protocol.messages import ErrorInfo

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def is_engine(filename: str) -> bool:
    return filename.startswith(ENGINE_DIR)


def strip_engine_frames(exc: BaseException) -> None:
    """Remove engine frames from ``exc`` and every exception it chains to."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        if tb is not None:
            kept = []
            while tb is not None:
                if not is_engine(tb.tb_frame.f_code.co_filename):
                    kept.append(tb)
                tb = tb.tb_next
            new = None
            for t in reversed(kept):
                new = TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
            e.__traceback__ = new
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                todo.append(linked)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)


def format_exception(exc: BaseException) -> str:
    """The traceback text of ``exc`` (engine frames removed), without a final newline."""
    import traceback

    strip_engine_frames(exc)
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception as fmt_exc:  # a broken __str__ or similar: still report something
        text = f"{type(exc).__name__}: <traceback could not be formatted: {fmt_exc!r}>\n"
    return clean(text.rstrip("\n"))


def error_info(exc: BaseException) -> ErrorInfo:
    """``ErrorInfo`` for a user exception: class name, message, traceback, notes.

    For a ``SyntaxError`` the message is its ``msg`` followed by the cell's line and column
    (1-based), e.g. ``invalid syntax (line 2, column 5)``; the traceback text has the cell
    name, line, source line and caret, like CPython's.
    """
    if isinstance(exc, SyntaxError):
        message = str(exc.msg) if exc.msg is not None else ""
        if exc.lineno:
            message += f" (line {exc.lineno}" + (f", column {exc.offset})" if exc.offset
                                                  else ")")
    else:
        try:
            message = str(exc)
        except Exception:
            message = f"<{type(exc).__name__} could not be converted to str>"
    notes = getattr(exc, "__notes__", None)
    note_list = [clean(str(n)) for n in notes] if isinstance(notes, list) else []
    traceback = format_exception(exc)
    hint = _hint(exc, message)
    if hint:
        traceback += f"\n{hint}"
    return ErrorInfo(type=type(exc).__name__, message=clean(message), traceback=traceback,
                     notes=note_list)


def _hint(exc: BaseException, message: str) -> str | None:
    """A line of advice for mistakes that come from running inside the session's loop (shown
    after the traceback; the exception itself is not changed)."""
    if isinstance(exc, RuntimeError) and (
            "cannot be called from a running event loop" in message
            or "This event loop is already running" in message):
        return ("hint: cells already run inside the session's event loop; use top-level "
                "`await coro` instead of asyncio.run(coro) or loop.run_until_complete(coro)")
    return None
