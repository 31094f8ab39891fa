"""Compile a cell into code objects, in explicit phases.

1. **parse**: source -> ``ast.Module`` with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and the session's
   accumulated ``__future__`` flags.
2. **split**: the last top-level statement, when it is an expression and the cell does not end
   with ``;`` (found with ``tokenize``, comments ignored), becomes its own ``eval`` part so its
   value is the cell's result.
3. **compile**: the body (``exec``) and then the expression (``eval``), with
   ``dont_inherit=True`` and ``flags = accumulated __future__ flags | PyCF_ALLOW_TOP_LEVEL_AWAIT``.
   ``__future__`` flags found in a compiled cell are OR-ed into the session's flags, never
   replacing them.
4. **fallback**: only when phase 3 fails with "'await' outside async function", the tree is
   rewritten (``rewrite.py``) and phases 2-3 run again; if that fails too, the original error
   is raised.

Nothing runs until every part compiled, so a ``SyntaxError`` never leaves a partial execution.

Compiled cells are cached in an LRU keyed by ``(source, flags)``; a cached cell run under
another filename gets renamed copies of its code objects (nested ones included), so tracebacks
always name the cell that ran.
"""

from __future__ import annotations
import __future__

import ast
import linecache
import os
from collections import OrderedDict
from collections.abc import Callable
from types import CodeType
from typing import Any

from cellbox.child import rewrite

TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE

#: every __future__ compiler flag that a code object can carry (nested_scopes is mandatory
#: and its bit means CO_NESTED on code objects, so it is left out).
FUTURE_MASK = 0
for _name in __future__.all_feature_names:
    if _name != "nested_scopes":
        FUTURE_MASK |= getattr(__future__, _name).compiler_flag
del _name

AWAIT_OUTSIDE_ASYNC = "'await' outside async function"

#: facts computed once per distinct cell by the analysis pass: (tree, is_async, source) -> facts
Scanner = Callable[[ast.Module, bool, str], Any]

_DEFAULT_CACHE_SIZE = 256


def cache_size_from_env(size: int | None = None) -> int:
    """The AST cache size: ``size``, else env ``CELLBOX_AST_CACHE_SIZE``, else
    ``ASYNC_EXECUTOR_AST_CACHE_SIZE``, else 256. Negative or unparsable values mean 256."""
    if size is not None:
        return max(0, size)
    for var in ("CELLBOX_AST_CACHE_SIZE", "ASYNC_EXECUTOR_AST_CACHE_SIZE"):
        raw = os.environ.get(var)
        if raw is not None and raw.strip():
            try:
                value = int(raw)
            except ValueError:
                return _DEFAULT_CACHE_SIZE
            return value if value >= 0 else _DEFAULT_CACHE_SIZE
    return _DEFAULT_CACHE_SIZE


class CompiledCell:
    """The code objects of one cell.

    ``body`` (``exec``) and ``expr`` (``eval``, the last expression) may each be ``None``;
    ``body_async``/``expr_async`` say whether running the part returns a coroutine that must be
    awaited. ``flags`` are the ``__future__`` flags the cell leaves in force; ``facts`` is
    whatever the scanner returned; ``rewritten`` is True when the fallback rewrites were used.
    """

    __slots__ = ("body", "expr", "body_async", "expr_async", "flags", "facts", "rewritten",
                 "filename")

    def __init__(self, body: CodeType | None, expr: CodeType | None, flags: int, facts: Any,
                 rewritten: bool, filename: str) -> None:
        self.body = body
        self.expr = expr
        self.body_async = body is not None and bool(body.co_flags & CO_COROUTINE)
        self.expr_async = expr is not None and bool(expr.co_flags & CO_COROUTINE)
        self.flags = flags
        self.facts = facts
        self.rewritten = rewritten
        self.filename = filename

    @property
    def is_async(self) -> bool:
        """True iff running the cell needs the event loop (some part must be awaited)."""
        return self.body_async or self.expr_async

    def renamed(self, filename: str) -> CompiledCell:
        if filename == self.filename:
            return self
        body = _rename(self.body, filename) if self.body is not None else None
        expr = _rename(self.expr, filename) if self.expr is not None else None
        return CompiledCell(body, expr, self.flags, self.facts, self.rewritten, filename)


def _rename(code: CodeType, filename: str) -> CodeType:
    consts = code.co_consts
    if any(isinstance(c, CodeType) for c in consts):
        consts = tuple(_rename(c, filename) if isinstance(c, CodeType) else c for c in consts)
    return code.replace(co_filename=filename, co_consts=consts)


class LRU:
    """A small least-recently-used mapping; ``size`` 0 stores nothing."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        if not self.size:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class CellCompiler:
    """Compiles cells for one session and remembers its ``__future__`` flags.

    ``compile`` raises ``SyntaxError`` (with ``text`` filled in from the cell) and whatever
    ``compile()`` itself raises (``ValueError``, ``RecursionError``, ``MemoryError``); on
    failure the session's flags are unchanged.
    """

    def __init__(self, cache_size: int = 256, scanner: Scanner | None = None) -> None:
        self.flags = 0
        self.cache = LRU(cache_size)
        self._scanner = scanner

    def compile(self, source: str, filename: str) -> CompiledCell:
        key = (source, self.flags)
        cell = self.cache.get(key)
        if cell is None:
            try:
                cell = self._compile(source, filename)
            except SyntaxError as exc:
                _fill_text(exc, source)
                raise
            self.cache.put(key, cell)
        else:
            cell = cell.renamed(filename)
        self.flags |= cell.flags
        return cell

    def _compile(self, source: str, filename: str) -> CompiledCell:
        flags = self.flags | TOP_LEVEL_AWAIT
        tree = _parse(source, filename, flags)
        quiet = ends_with_semicolon(source)
        rewritten = False
        try:
            body, expr, future = _codegen(tree, quiet, filename, flags)
        except SyntaxError as exc:
            if exc.msg != AWAIT_OUTSIDE_ASYNC:
                raise
            tree = _parse(source, filename, flags)
            if not rewrite.make_async(tree):
                raise
            try:
                body, expr, future = _codegen(tree, quiet, filename, flags)
            except SyntaxError:
                raise exc from None  # the rewrite did not help: report the user's own error
            rewritten = True
        facts = None
        if self._scanner is not None:
            facts = self._scanner(tree, bool((body and body.co_flags & CO_COROUTINE)
                                             or (expr and expr.co_flags & CO_COROUTINE)), source)
        return CompiledCell(body, expr, self.flags | future, facts, rewritten, filename)


def _parse(source: str, filename: str, flags: int) -> ast.Module:
    return compile(source, filename, "exec", flags | ast.PyCF_ONLY_AST, dont_inherit=True)


def _codegen(tree: ast.Module, quiet: bool, filename: str,
             flags: int) -> tuple[CodeType | None, CodeType | None, int]:
    stmts = tree.body
    last = None
    if stmts and isinstance(stmts[-1], ast.Expr) and not quiet:
        last = stmts[-1].value
        stmts = stmts[:-1]
    body = None
    future = 0
    if stmts:
        module = tree if last is None else ast.Module(body=stmts, type_ignores=[])
        body = compile(module, filename, "exec", flags, dont_inherit=True)
        future = body.co_flags & FUTURE_MASK
    expr = None
    if last is not None:
        expr = compile(ast.Expression(body=last), filename, "eval", flags | future,
                       dont_inherit=True)
    return body, expr, future


def ends_with_semicolon(source: str) -> bool:
    """True iff the last token of ``source`` that is not a comment or whitespace is ``;``.

    IPython's rule for suppressing a cell's value. Strings and comments containing ``;`` do
    not count. Source that does not tokenize gives False.
    """
    if ";" not in source:
        return False
    import io
    import tokenize

    last = None
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.ERRORTOKEN:
                return False
            if tok.type not in skip:
                last = tok
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def register_source(filename: str, source: str) -> None:
    """Make ``source`` the text of ``filename`` for tracebacks and ``inspect``.

    An entry with ``mtime None`` survives ``linecache.checkcache()``.
    """
    lines = source.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)


def _fill_text(exc: SyntaxError, source: str) -> None:
    # Errors found after parsing (e.g. "'await' outside async function") carry no text.
    if exc.text is None and exc.lineno:
        lines = source.splitlines()
        if 0 < exc.lineno <= len(lines):
            exc.text = lines[exc.lineno - 1] + "\n"
