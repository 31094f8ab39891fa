"""Errors that happen outside the running cell, reported on the session's stderr.

Background tasks and loop callbacks fail where no cell can catch them. They are never lost:

- the loop's exception handler (``exception_handler``) writes asyncio's message (``Task
  exception was never retrieved``, ``Exception in callback ...``) with the traceback, engine
  frames removed, to the stderr writer;
- asyncio itself reports an unretrieved task exception only when the task is garbage-collected,
  which never happens while ``_`` or a variable holds the task. So every task made through
  ``task_factory`` gets a done callback, and ``report_unretrieved()`` (called at the end of each
  cell) reports the tasks that failed since the last call and whose exception nobody retrieved;
  reporting marks the exception retrieved, so it is reported once;
- ``report_escaped`` writes a ``KeyboardInterrupt``/``SystemExit`` that escaped the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cellbox.child import errors
from cellbox.child.capture import StreamWriter

TaskFactory = Callable[..., "asyncio.Task[Any]"]


class BackgroundReporter:
    """Reports failures of background tasks and callbacks on ``stderr``."""

    def __init__(self, stderr: StreamWriter) -> None:
        self._stderr = stderr
        self._failed: list[asyncio.Task[Any]] = []
        #: the loop's task factory before ours (None: plain ``asyncio.Task``), wrapped by ours
        self.previous_factory: TaskFactory | None = None

    def exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        lines = [str(context.get("message") or "Unhandled exception in the event loop")]
        for key in ("task", "future", "handle"):
            if key in context:
                try:
                    lines.append(f"{key}: {context[key]!r}")
                except Exception:
                    pass
        text = "\n".join(lines) + "\n"
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            text += errors.format_exception(exc) + "\n"
        self._stderr.write(text)
        self._stderr.flush()

    def task_factory(self, loop: asyncio.AbstractEventLoop, coro: Any,
                     **kwargs: Any) -> asyncio.Task[Any]:
        if self.previous_factory is not None:
            task = self.previous_factory(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        stack = getattr(task, "_source_traceback", None)  # debug mode: where it was created
        while stack and errors.is_engine(stack[-1].filename):
            del stack[-1]  # this factory: the user's frame is what the report should name
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if getattr(task, "_log_traceback", False):  # failed, exception not retrieved (yet)
            self._failed.append(task)

    def report_unretrieved(self) -> None:
        failed, self._failed = self._failed, []
        for task in failed:
            if getattr(task, "_log_traceback", False):  # still not retrieved
                self.exception_handler(task.get_loop(), {
                    "message": "Task exception was never retrieved (reported at the end of "
                               "the cell)",
                    "exception": task.exception(),  # marks it retrieved: no second report
                    "future": task,
                })

    def report_escaped(self, exc: BaseException) -> None:
        self._stderr.write(f"{type(exc).__name__} escaped from a background task or callback; "
                           "the session continues\n")
        self._stderr.write(errors.format_exception(exc) + "\n")
        self._stderr.flush()
