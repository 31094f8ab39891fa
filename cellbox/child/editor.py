"""Completion and inspection against a session's live namespace (``session/complete``,
``session/inspect``).

Theory of operation
-------------------
``complete`` and ``inspect`` are called by the child's host on its main thread, between cells
or while a cell awaits, with the session's globals dict and a ``Complete``/``Inspect`` message.
Two engines answer:

- *our own* (always first): a small scanner finds the context at the cursor (a comment, a
  string after ``d[``, an ``import``/``from`` statement, a call's argument list, a chain of
  names, attributes and literal subscripts such as ``d["a"][0].re``, a literal or a call before
  a ``.``). Objects are found through the namespace dict, the builtins and
  ``inspect.getattr_static`` only, plus ``ast.literal_eval`` of literals and of literal
  assignments in the cell. Properties, other Python-level descriptors, ``__getattr__``,
  ``__getitem__`` and ``keys`` overrides are never called: keys are read from real ``dict``s
  (``dict.keys``), ``os.environ`` and ``mappingproxy`` only; modules that are not imported are
  never imported (submodules come from ``importlib.machinery.PathFinder`` and ``pkgutil``,
  names from the module's source parsed with ``ast``). ``dir()`` is called, so a user-defined
  ``__dir__`` does run (as it does in jedi, IPython and ``rlcompleter``).
- *jedi*, asked only when the live objects cannot answer (an unknown name, a string that is
  not a dict key, e.g. a path, a call whose callee is unknown, ``from m import`` of a module
  not imported) and when importable and not switched off (``USE_JEDI = False`` or env
  ``CELLBOX_NO_JEDI=1``): ``jedi.Interpreter`` with ``allow_unsafe_interpreter_executions``
  off, so it does not evaluate properties or custom ``__getitem__``, and with two private
  helpers replaced (``mixed._get_object_to_check``, which calls ``inspect.unwrap`` and so
  ``__getattr__``; ``DirectObjectAccess.get_key_paths``, which calls a dict subclass's
  ``keys``). It is imported on first use and runs in a worker thread under a time budget
  (``JEDI_BUDGET`` seconds): if it does not answer in time the reply is ours alone, and the
  thread finishes in the background (warming jedi's caches) while later requests skip jedi.
  Invariant: at most one jedi call runs at a time.

Completion matches of both engines are merged (one ``cursorStart``), de-duplicated, sorted
(dict keys and ``name=`` keyword arguments first, then public names, ``_private``, dunders)
and capped at ``MAX_MATCHES``. Inspection uses our resolver first (it sees the live object) and
jedi's inference when ours finds nothing. Neither raises: a failure gives an empty answer.

Cursors are offsets in code points into ``code`` (Python string indices).

Modules, lowest first (none imports one above it): ``scanner`` (the context at the cursor,
from the text alone), ``resolver`` (objects found without running user code), ``inspection``
(the help text), ``completion`` (our own completer), ``jedi_bridge`` (jedi, loaded, patched
and run under the budget), and this one, which combines them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

from cellbox.child import jedi_bridge
from cellbox.child.completion import complete_key_string, own_complete
from cellbox.child.inspection import describe, target_at
from cellbox.child.resolver import MISSING, resolve
from cellbox.child.scanner import scan
from cellbox.protocol import channel as ch

__all__ = ["JEDI_BUDGET", "MAX_MATCHES", "USE_JEDI", "complete", "completions", "inspect", "inspection"]

MAX_MATCHES = 200
JEDI_BUDGET = 0.2
USE_JEDI: bool | None = None
"""``None``: use jedi when it imports and env ``CELLBOX_NO_JEDI`` is unset; ``False``: never."""


def complete(namespace: dict[str, Any], msg: ch.Complete) -> ch.CompleteReply:
    """Answer a ``Complete`` message; never raises (an empty answer on failure)."""
    try:
        matches, start, end = completions(namespace, msg.code, msg.cursor)
    except Exception:
        matches, start, end = [], msg.cursor, msg.cursor
    return ch.CompleteReply(id=msg.id, matches=matches, cursor_start=start, cursor_end=end)


def inspect(namespace: dict[str, Any], msg: ch.Inspect) -> ch.InspectReply:
    """Answer an ``Inspect`` message; never raises (``found: false`` on failure)."""
    try:
        text = inspection(namespace, msg.code, msg.cursor)
    except Exception:
        text = None
    if text is None:
        return ch.InspectReply(id=msg.id, found=False)
    return ch.InspectReply(id=msg.id, found=True, data={"text/plain": text})


def completions(namespace: dict[str, Any], code: str, cursor: int, *,
                budget: float | None = None) -> tuple[list[str], int, int]:
    """``(matches, cursor_start, cursor_end)`` for ``code`` at ``cursor`` (clamped to the text).

    ``budget`` is jedi's time limit in seconds (default ``JEDI_BUDGET``).
    """
    cursor = max(0, min(cursor, len(code)))
    with _quiet():
        ctx = scan(code[:cursor])
        if ctx.comment:
            return [], cursor, cursor
        if ctx.string is not None:
            keys = complete_key_string(namespace, code, cursor, ctx)
            if keys is not None:  # a real dict's keys: ours alone (jedi misquotes some)
                return _order(keys[0]), keys[1], keys[2]
        own, start, exact = own_complete(namespace, code, cursor, ctx)
    end = cursor
    found = None if exact else _with_jedi(
        lambda: jedi_bridge.complete(namespace, code, cursor, MAX_MATCHES * 4), budget)
    if found:
        j_matches, j_start = found
        if j_matches:
            if not own:
                start = j_start
            elif j_start < start:
                own = [code[j_start:start] + m for m in own]
                start = j_start
            elif j_start > start:
                j_matches = [code[start:j_start] + m for m in j_matches]
            own = own + j_matches
    return _order(own), start, end


def inspection(namespace: dict[str, Any], code: str, cursor: int, *,
               budget: float | None = None) -> str | None:
    """The ``text/plain`` help for the object at ``cursor`` (like IPython's ``obj?``), or None.

    The object is the dotted name under or just before the cursor; inside a call's arguments,
    when the cursor is not on a name, it is the function being called.
    """
    cursor = max(0, min(cursor, len(code)))
    target = target_at(code, cursor)
    if target is None:
        return None
    name, end = target
    with _quiet():
        obj = resolve(namespace, name, code)
        if obj is not MISSING:
            return describe(name, obj)
    return _with_jedi(lambda: jedi_bridge.inspect(namespace, code, end), budget)


@contextlib.contextmanager
def _quiet() -> Any:
    """Hide warnings raised while we look at objects, except while a late jedi call runs:
    ``catch_warnings`` is not thread-safe, and jedi's own use of it in that thread could then
    restore our "ignore" filter after us, silencing the session's warnings for good."""
    if jedi_bridge.busy():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _order(matches: list[str]) -> list[str]:
    def rank(m: str) -> tuple[int, str, str]:
        last = m.rpartition(".")[2]
        if m.endswith("=") or (m[:1] and m[:1] in "'\"-") or m[:1].isdigit() or m[:2] in ("b'", 'b"'):
            r = 0
        elif last.startswith("__") and last.endswith("__"):
            r = 3
        elif last.startswith("_"):
            r = 2
        else:
            r = 1
        return r, m.lower(), m

    return sorted(set(matches), key=rank)[:MAX_MATCHES]


def _jedi_enabled() -> bool:
    """True iff jedi may be asked: not switched off (read at each call) and not failed to import."""
    if USE_JEDI is False or jedi_bridge.failed():
        return False
    return USE_JEDI is True or not os.environ.get("CELLBOX_NO_JEDI")


def _with_jedi(call: Any, budget: float | None) -> Any:
    """``call()``'s answer from jedi within ``budget`` (default ``JEDI_BUDGET``); None if jedi
    is off, busy, failed or late."""
    if not _jedi_enabled():
        return None
    return jedi_bridge.run(call, JEDI_BUDGET if budget is None else budget)
