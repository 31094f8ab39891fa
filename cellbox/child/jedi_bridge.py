"""jedi, for what the live objects cannot answer: imported on first use, made safe, and run in
a worker thread under a time budget.

Safety: ``allow_unsafe_interpreter_executions`` is off, so jedi does not evaluate properties
or custom ``__getitem__``, and two private helpers of jedi are replaced by ``_object_to_check``
and ``_key_paths`` (see their docstrings). A call that outlives its budget is abandoned, not
stopped: it finishes in the background, warming jedi's caches.

Invariant: at most one jedi call runs at a time; ``_busy`` is held from the start of a call
until its thread ends (a late call keeps it, so later requests skip jedi until then). The
lock is made anew in a forked child, where the thread holding it does not exist.
"""

from __future__ import annotations

import inspect as _inspect
import os
import threading
from typing import Any

from cellbox.child import signals
from cellbox.child.resolver import MISSING, dict_keys, getattr_static

_jedi: Any = None  # the jedi module, once loaded
_failed = False  # importing jedi failed (the editor then stops asking)
_busy = threading.Lock()


def busy() -> bool:
    """True iff a jedi call is running (possibly a late one, in the background)."""
    return _busy.locked()


def failed() -> bool:
    """True iff jedi could not be imported."""
    return _failed


def _load() -> Any:
    global _jedi, _failed
    if _jedi is None:
        try:
            import jedi
            from jedi.inference.compiled import access, mixed
        except Exception:
            _failed = True
            raise
        jedi.settings.allow_unsafe_interpreter_executions = False
        jedi.settings.case_insensitive_completion = False
        if hasattr(mixed, "_get_object_to_check"):
            mixed._get_object_to_check = _object_to_check
        if hasattr(access.DirectObjectAccess, "get_key_paths"):
            access.DirectObjectAccess.get_key_paths = _key_paths
        _jedi = jedi
    return _jedi


def _object_to_check(obj: Any) -> Any:
    """jedi's ``mixed._get_object_to_check`` without ``inspect.unwrap`` (which calls
    ``__getattr__``) and without reading ``obj.__class__`` (which may be a property)."""
    for _ in range(100):
        wrapped = getattr_static(obj, "__wrapped__")
        if wrapped is MISSING or isinstance(obj, type) or hasattr(type(wrapped), "__get__") and not callable(wrapped):
            break
        obj = wrapped
    if _inspect.ismodule(obj) or _inspect.isclass(obj) or _inspect.ismethod(obj) or _inspect.isfunction(obj) \
            or _inspect.istraceback(obj) or _inspect.isframe(obj) or _inspect.iscode(obj):
        return obj
    return type(obj)


def _key_paths(self: Any) -> list[Any]:
    """jedi's ``DirectObjectAccess.get_key_paths`` reading keys with ``dict.keys`` (a dict
    subclass's ``keys`` override is user code)."""
    obj = self._obj
    keys = dict_keys(obj)[:50] if isinstance(obj, dict) else []
    return [self._create_access_path(k) for k in keys]


def run(call: Any, budget: float) -> Any:
    """Load jedi and run ``call`` in a worker thread, waiting ``budget`` seconds; ``call()``'s
    answer, or None if jedi is busy, failed to load, raised or is late (a late call finishes in
    the background, holding the lock until it does)."""
    if not _busy.acquire(blocking=False):
        return None
    box: list[Any] = []

    def work() -> None:
        try:
            _load()
            box.append(call())
        except Exception:
            pass
        finally:
            _busy.release()

    worker = threading.Thread(target=work, name="cellbox-editor", daemon=True)
    try:
        signals.start_blocked(worker)  # it may outlive the request: SIGINT is the main thread's
    except RuntimeError:
        _busy.release()
        return None
    worker.join(budget)
    return box[0] if box and not worker.is_alive() else None


def _line_col(code: str, offset: int) -> tuple[int, int]:
    before = code[:offset]
    line = before.count("\n") + 1
    return line, len(before) - (before.rfind("\n") + 1)


def complete(namespace: dict[str, Any], code: str, cursor: int, limit: int) -> tuple[list[str], int]:
    """``(matches, cursor_start)`` from jedi's first ``limit`` completions (those that replace
    as much text as the first one does)."""
    line, col = _line_col(code, cursor)
    found = _jedi.Interpreter(code, [namespace]).complete(line, col)
    if not found:
        return [], cursor
    length = found[0].get_completion_prefix_length()
    matches = [c.name_with_symbols for c in found[:limit]
               if c.get_completion_prefix_length() == length]
    return matches, cursor - length


def inspect(namespace: dict[str, Any], code: str, offset: int) -> str | None:
    """The docstring and type jedi infers for the name ending at ``offset``, or None."""
    line, col = _line_col(code, offset)
    for name in _jedi.Interpreter(code, [namespace]).infer(line, col):
        doc = name.docstring()
        kind = name.full_name or name.name
        return f"{doc}\n\nType:      {name.type} ({kind}, inferred)" if doc else f"Type:      {name.type} ({kind}, inferred)"
    return None


def _reset_after_fork() -> None:
    global _busy
    _busy = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
