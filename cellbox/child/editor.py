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
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import importlib.machinery
import inspect as _inspect
import keyword
import os
import pkgutil
import re
import sys
import threading
import time
import types
import warnings
from typing import Any

from cellbox.protocol import channel as ch

__all__ = ["JEDI_BUDGET", "MAX_MATCHES", "USE_JEDI", "complete", "completions", "inspect", "inspection"]

MAX_MATCHES = 200
JEDI_BUDGET = 0.2
USE_JEDI: bool | None = None
"""``None``: use jedi when it imports and env ``CELLBOX_NO_JEDI`` is unset; ``False``: never."""

_MISSING: Any = object()
_ID = r"[^\W\d]\w*"
_LITERAL = r"""[bB]?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")|-?\d+"""
# a chain of names, attributes and literal subscripts: os.path, d["a"][0].real
_CHAIN = re.compile(rf"""(?<![\w.\])'"])(?:{_ID})(?:[ \t]*\.[ \t]*{_ID}|[ \t]*\[[ \t]*(?:{_LITERAL})[ \t]*\])*\Z""")
_CHAIN_PART = re.compile(rf"({_ID})|\[[ \t]*({_LITERAL})[ \t]*\]")
_PREFIX = re.compile(rf"(?:{_ID})?\Z")
_KEYWORDS = sorted(set(keyword.kwlist) | (set(keyword.softkwlist) - {"_"}))


# -- public face ----------------------------------------------------------------------------


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
        ctx = _scan(code[:cursor])
        if ctx.comment:
            return [], cursor, cursor
        if ctx.string is not None:
            keys = _complete_key_string(namespace, code, cursor, ctx)
            if keys is not None:  # a real dict's keys: ours alone (jedi misquotes some)
                return _order(keys[0]), keys[1], keys[2]
        own, start, exact = _own_complete(namespace, code, cursor, ctx)
    end = cursor
    found = None if exact else _with_jedi(lambda: _jedi_complete(namespace, code, cursor), budget)
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
    target = _target_at(code, cursor)
    if target is None:
        return None
    name, end = target
    with _quiet():
        obj = _resolve(namespace, name, code)
        if obj is not _MISSING:
            return _describe(name, obj)
    return _with_jedi(lambda: _jedi_inspect(namespace, code, end), budget)


@contextlib.contextmanager
def _quiet() -> Any:
    """Hide warnings raised while we look at objects, except while a late jedi call runs:
    ``catch_warnings`` is not thread-safe, and jedi's own use of it in that thread could then
    restore our "ignore" filter after us, silencing the session's warnings for good."""
    if _jedi_busy.locked():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- context scanner ------------------------------------------------------------------------

_TOKEN = re.compile(r"""#[^\n]*|(?:(?<!\w)[rRbBuUfF]{1,2})?(?:'''|\"\"\"|'|")|[()\[\]{}]|\\\r?\n|\n|;""")
_STRING_END = {
    "'": re.compile(r"(?:[^'\\\n]|\\.)*('|\n|\Z)", re.DOTALL),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*("|\n|\Z)', re.DOTALL),
    "'''": re.compile(r"(?:[^\\]|\\.)*?('''|\Z)", re.DOTALL),
    '"""': re.compile(r'(?:[^\\]|\\.)*?("""|\Z)', re.DOTALL),
}
_CLOSE = {")": "(", "]": "[", "}": "{"}


class _Context:
    """What surrounds the end of a text: open brackets, an open string or comment."""

    __slots__ = ("brackets", "comment", "last_closed", "last_string", "stmt_start", "string")

    def __init__(self) -> None:
        self.brackets: list[tuple[str, int]] = []  # (opener, offset), innermost last
        self.string: tuple[int, str, str] | None = None  # (offset of prefix, prefix, quote)
        self.comment = False
        self.stmt_start = 0  # where the logical line that holds the end starts
        self.last_string = (0, 0)  # span of the last closed string literal
        self.last_closed = ("", 0, 0)  # (opener, span) of the last closed bracket pair


def _scan(text: str) -> _Context:
    ctx = _Context()
    pos = 0
    while True:
        m = _TOKEN.search(text, pos)
        if m is None:
            return ctx
        tok = m.group()
        pos = m.end()
        c = tok[0]
        if c == "#":
            if pos == len(text):
                ctx.comment = True
        elif tok[-1] in "'\"":
            quote = tok.lstrip("rRbBuUfF")
            end = _STRING_END[quote].match(text, pos)
            assert end is not None  # every pattern can match the empty rest
            if end.group(1) == "" or (end.group(1) == "\n" and end.end() == len(text)):
                ctx.string = (m.start(), tok[: len(tok) - len(quote)], quote)
                return ctx
            pos = end.end()
            ctx.last_string = (m.start(), pos)
        elif c in "([{":
            ctx.brackets.append((c, m.start()))
        elif c in ")]}":
            if ctx.brackets and ctx.brackets[-1][0] == _CLOSE[c]:
                opener, start = ctx.brackets.pop()
                ctx.last_closed = (opener, start, pos)
            else:
                ctx.brackets = []
        elif c == "\\":
            pass  # a continuation line: same statement
        elif not ctx.brackets:  # newline or ";" outside brackets
            ctx.stmt_start = pos


def _chain_end(text: str) -> str | None:
    """The chain (``a.b["k"][0]``) that ends ``text``, or None if ``text`` does not end with one."""
    window = text[-400:]
    m = _CHAIN.search(window)
    return m.group() if m else None


def _completion_target(before: str) -> tuple[str | None, str] | None:
    """``(chain, prefix)`` for attribute completion (``chain.prefix``), ``(None, prefix)``
    for a plain name, or None where no name can be completed here: after a digit (``1e``), or
    after a ``.`` that follows something other than a chain (``f().x``, ``"s".up``)."""
    m = _PREFIX.search(before)
    assert m is not None  # the pattern matches the empty string
    prefix = m.group()
    head = before[: m.start()]
    adjacent = head[-1:]
    if adjacent and (adjacent.isalnum() or adjacent == "_"):
        return None
    stripped = head.rstrip(" \t")
    if stripped.endswith("."):
        chain = _chain_end(stripped[:-1].rstrip(" \t"))
        return None if chain is None else (chain, prefix)
    if not prefix and adjacent and adjacent in ")]}'\"":
        return None
    return None, prefix


# -- our own completer ------------------------------------------------------------------------

_IMPORT = re.compile(r"import[ \t]+(?P<rest>.*)\Z", re.DOTALL)
_FROM = re.compile(r"from[ \t]+(?P<mod>[\w.]*)(?P<sp>[ \t]+(?P<kw>\w*)(?P<imp>[ \t]+\(?(?P<rest>.*))?)?\Z", re.DOTALL)


def _own_complete(namespace: dict[str, Any], code: str, cursor: int,
                  ctx: _Context) -> tuple[list[str], int, bool]:
    """``(matches, cursor_start, exact)``: ``exact`` when the live objects answered fully and
    jedi has nothing to add (it is then not asked)."""
    before = code[:cursor]
    if ctx.string is not None:
        return [], cursor, False
    stmt = before[ctx.stmt_start:].lstrip()
    if stmt.startswith(("import", "from")):
        found = _complete_import(stmt, cursor)
        if found is not None:
            return found
    target = _completion_target(before)
    if ctx.brackets and ctx.brackets[-1][0] == "[":
        # d[<TAB>, d[3, d[ab: keys of a real dict as literals (only them on an empty prefix)
        pos = ctx.brackets[-1][1]
        typed = before[pos + 1 :].lstrip()
        obj = _subject(namespace, before[:pos], code)
        if re.fullmatch(r"-?\w*", typed) and _is_mapping(obj):
            keys = [r for r in _key_literals(obj) if r.startswith(typed)]
            if (keys and not typed) or target is None or target[0] is not None:
                return keys, cursor - len(typed), True
            names = [n for n in _names(namespace, code) if n.startswith(target[1])]
            return keys + names, cursor - len(typed), True
    if target is None:
        obj = _value_before_dot(namespace, code, before, ctx)
        if obj is _MISSING:
            return [], cursor, False
        prefix = _PREFIX.search(before).group()  # type: ignore[union-attr]
        return [n for n in _attr_names(obj) if n.startswith(prefix)], cursor - len(prefix), True
    chain, prefix = target
    start = cursor - len(prefix)
    if chain is not None:
        obj = _resolve(namespace, chain, code, calls=True)
        if obj is _MISSING or isinstance(obj, _Unevaluated):
            return [], start, False
        return [n for n in _attr_names(obj) if n.startswith(prefix)], start, True
    matches = [n for n in _names(namespace, code) if n.startswith(prefix)]
    exact = True
    if ctx.brackets and ctx.brackets[-1][0] == "(":
        kwargs = _keyword_args(namespace, code, before, ctx.brackets[-1][1], start)
        if kwargs is None:
            exact = False
        else:
            matches += [k for k in kwargs if k.startswith(prefix)]
    return matches, start, exact


def _value_before_dot(namespace: dict[str, Any], code: str, before: str, ctx: _Context) -> Any:
    """What a literal or a call ends with before ``.prefix`` (``"s".up``, ``[1].app``,
    ``Counter().most``), found without running anything: a literal is read with
    ``ast.literal_eval``; a call of a class stands for that class (whose attributes an
    instance has), a call of a function annotated to return a class for that class."""
    head = before[: _PREFIX.search(before).start()].rstrip(" \t")  # type: ignore[union-attr]
    if not head.endswith("."):
        return _MISSING
    end = len(head[:-1].rstrip())
    if ctx.last_string[1] == end:
        text = code[ctx.last_string[0] : end]
        return "" if "f" in text[:2].lower() else _literal(text)  # an f-string is a str
    opener, start, close = ctx.last_closed
    if close != end:
        return _MISSING
    callee = _chain_end(code[:start].rstrip()) if opener == "(" else None
    if callee is None:
        previous = code[:start].rstrip()[-1:]
        if previous and (previous.isalnum() or previous in "_)]}'\""):
            return _MISSING  # a subscript or a call of something that is not a plain chain
        return _literal(code[start:end])
    func = _resolve(namespace, callee, code)
    if isinstance(func, type):
        return func
    ret = getattr(_signature(func), "return_annotation", None) if func is not _MISSING else None
    if isinstance(ret, str) and _CHAIN.fullmatch(ret):  # from __future__ import annotations
        home = func.__globals__ if isinstance(func, (types.FunctionType, types.MethodType)) else None
        ret = _resolve(home, ret) if isinstance(home, dict) else _MISSING
    return ret if isinstance(ret, type) else _MISSING


def _literal(text: str) -> Any:
    if len(text) > 100_000:
        return _MISSING
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING


def _complete_key_string(namespace: dict[str, Any], code: str, cursor: int,
                         ctx: _Context) -> tuple[list[str], int, int] | None:
    """Keys for ``d["ab``, or None if the string is not a key of a real dict."""
    assert ctx.string is not None
    pos, prefix, quote = ctx.string
    before = code[:cursor]
    head = before[:pos].rstrip()
    if len(quote) != 1 or "f" in prefix.lower() or not head.endswith("["):
        return None
    obj = _subject(namespace, head[:-1], code)
    if not _is_mapping(obj):
        return None
    typed = before[pos + len(prefix) + 1 :]
    want = bytes if "b" in prefix.lower() else str
    matches = []
    for key in _dict_keys(obj):
        if type(key) is want:
            body = repr(key)[1 + (want is bytes) : -1]
            if repr(key)[-1] != quote:
                body = body.replace("\\'", "'").replace(quote, "\\" + quote)
            if body.startswith(typed):
                matches.append(prefix + quote + body + quote)
    end = cursor + 1 if code[cursor : cursor + 1] == quote else cursor
    return matches, pos, end


def _subject(namespace: dict[str, Any], text: str, code: str) -> Any:
    """The live object named by the chain that ends ``text`` (before a ``[``)."""
    chain = _chain_end(text.rstrip())
    return _MISSING if chain is None else _resolve(namespace, chain, code)


_SAFE_MAPPINGS = (types.MappingProxyType, type(os.environ))


def _is_mapping(obj: Any) -> bool:
    """True iff ``obj`` is a dict or a stdlib mapping whose keys can be read without user code."""
    return isinstance(obj, dict) or type(obj) in _SAFE_MAPPINGS


def _dict_keys(d: Any) -> list[Any]:
    """The keys of a real dict (``dict.keys``: an override in a subclass is not called) or of
    ``os.environ`` or a ``mappingproxy``."""
    try:
        if isinstance(d, dict):
            return list(dict.keys(d))[:10_000]
        if type(d) in _SAFE_MAPPINGS:
            return list(d.keys())[:10_000]
    except Exception:
        pass
    return []


def _key_literals(d: dict[Any, Any]) -> list[str]:
    out = []
    for key in _dict_keys(d):
        if type(key) in (str, bytes, int, float, bool) or key is None:
            out.append(repr(key))
    return out


def _complete_import(stmt: str, cursor: int) -> tuple[list[str], int, bool] | None:
    """Module paths after ``import``/``from``, names after ``from m import``; None if
    ``stmt`` is not an import statement after all."""
    m = _IMPORT.match(stmt)
    if m:
        item = m.group("rest").rsplit(",", 1)[-1].strip()
        if not re.fullmatch(r"[\w.]*", item):
            return [], cursor, True  # "import a as b": a new name
        parent, _, prefix = item.rpartition(".")
        return [n for n in _submodules(parent) if n.startswith(prefix)], cursor - len(prefix), True
    m = _FROM.match(stmt)
    if m is None:
        return None
    module = m.group("mod")
    if not m.group("sp"):
        parent, _, prefix = module.rpartition(".")
        if module.startswith("."):
            return [], cursor, True  # relative imports: a cell has no package
        return [n for n in _submodules(parent) if n.startswith(prefix)], cursor - len(prefix), True
    if m.group("imp") is None:
        kw = m.group("kw")
        return (["import"] if "import".startswith(kw) else []), cursor - len(kw), True
    if m.group("kw") != "import":
        return [], cursor, True
    item = m.group("rest").rsplit(",", 1)[-1].strip()
    if not re.fullmatch(r"\w*", item):
        return [], cursor, True
    names = _module_names(module) + _submodules(module)
    matches = [n for n in names if n.startswith(item) and (item or not n.startswith("_"))]
    # a module that is not imported was read from its source: jedi may know more (star imports)
    return matches, cursor - len(item), module in sys.modules


@functools.lru_cache(maxsize=1)
def _top_modules(path: tuple[str, ...], stamp: int) -> list[str]:
    names = set(sys.builtin_module_names)
    names.update(m.name for m in pkgutil.iter_modules(list(path)))
    return sorted(n for n in names if n.isidentifier())


def _submodules(parent: str) -> list[str]:
    """Names of the modules inside package ``parent`` ("" for top-level), importing nothing."""
    if not parent:
        return _top_modules(tuple(sys.path), int(time.monotonic() // 30))  # fresh every 30 s
    mod = sys.modules.get(parent)
    found: set[str] = set()
    if mod is not None:
        try:
            found = {k for k, v in vars(mod).items() if isinstance(v, types.ModuleType) and isinstance(k, str)}
        except TypeError:
            pass
    if mod is not None:
        locations = _static(mod, "__path__")
    else:
        spec = _find_spec(parent)
        locations = spec.submodule_search_locations if spec is not None else None
    if locations is not None and locations is not _MISSING:
        try:
            found.update(m.name for m in pkgutil.iter_modules(list(locations)))
        except Exception:
            pass
    return sorted(found)


def _find_spec(dotted: str) -> Any:
    spec = None
    path = None
    parts = dotted.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        mod = sys.modules.get(name)
        if mod is not None and isinstance(_static(mod, "__spec__"), importlib.machinery.ModuleSpec):
            spec = _static(mod, "__spec__")
        else:
            try:
                spec = importlib.machinery.PathFinder.find_spec(name, path)
            except Exception:
                return None
        if spec is None:
            return None
        path = spec.submodule_search_locations
        if path is None and i < len(parts) - 1:
            return None
    return spec


def _module_names(dotted: str) -> list[str]:
    """Top-level names of a module: from ``vars()`` if it is imported, else from its source."""
    mod = sys.modules.get(dotted)
    if mod is not None:
        try:
            return [k for k in vars(mod) if isinstance(k, str)]
        except TypeError:
            return []
    spec = _find_spec(dotted)
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return []
    try:
        if os.path.getsize(origin) > 2_000_000:
            return []
        with open(origin, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return []
    return _defined_names(tree.body)


def _defined_names(body: list[ast.stmt]) -> list[str]:
    names: list[str] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
        elif isinstance(node, (ast.If, ast.Try)):
            names += _defined_names(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                names += _defined_names(handler.body)
    return names


_CODE_DEFS = re.compile(
    r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)|^[ \t]*(\w+)[ \t]*(?::[^=\n]*)?=(?!=)"
    r"|\bimport[ \t]+([\w., \t]+)|\bas[ \t]+(\w+)|\bfor[ \t]+(\w+)[ \t]+in\b", re.MULTILINE)


def _names(namespace: dict[str, Any], code: str) -> list[str]:
    names = {k for k in namespace if isinstance(k, str)}
    names.update(vars(builtins) if not isinstance(b := namespace.get("__builtins__"), dict) else b)
    names.update(_KEYWORDS)
    for m in _CODE_DEFS.finditer(code):
        for group in m.groups():
            if group:
                names.update(part.split(".")[0].strip() for part in group.split(","))
    return [n for n in names if isinstance(n, str) and n.isidentifier()]


def _keyword_args(namespace: dict[str, Any], code: str, before: str, paren: int,
                  name_start: int) -> list[str] | None:
    """``name=`` for the parameters of the call whose ``(`` is at ``paren``, if the cursor is
    on an argument's start (after ``(`` or ``,``); None if the callee cannot be resolved."""
    prev = before[:name_start].rstrip()
    if not prev or prev[-1] not in "(,":
        return []
    chain = _chain_end(before[:paren].rstrip())
    if chain is None:
        return None
    if chain in _KEYWORDS:  # "if (", "not (": not a call
        return []
    func = _resolve(namespace, chain, code)
    sig = _signature(func) if func is not _MISSING else None
    if sig is None:
        return None
    given = set(re.findall(r"(?:^|[(,])\s*(\w+)\s*=(?!=)", before[paren:]))
    kinds = (_inspect.Parameter.POSITIONAL_OR_KEYWORD, _inspect.Parameter.KEYWORD_ONLY)
    return [p.name + "=" for p in sig.parameters.values() if p.kind in kinds and p.name not in given]


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


# -- safe resolution --------------------------------------------------------------------------


class _Unevaluated:
    """An attribute whose value needs user code (a property or another Python descriptor)."""

    __slots__ = ("descriptor", "name", "owner")

    def __init__(self, descriptor: Any, owner: type, name: str) -> None:
        self.descriptor = descriptor
        self.owner = owner
        self.name = name


_C_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType, types.MethodDescriptorType,
                  types.WrapperDescriptorType, types.ClassMethodDescriptorType)


def _resolve(namespace: dict[str, Any], chain: str, code: str = "", *, calls: bool = False) -> Any:
    """The object a chain (``a.b["k"][0]``) denotes, found without running user code, or
    ``_MISSING``.

    The first name comes from the namespace, the builtins, an ``import`` in ``code`` of a
    module that is already imported, or an assignment in ``code`` (see ``_assigned_in``;
    ``calls``: let ``c = Cls()`` stand for ``Cls``, which is right for listing attributes
    only). Attributes go through ``_static_attr``; subscripts index only real dicts, lists
    and tuples.
    """
    parts = _CHAIN_PART.findall(chain)
    if not parts or not parts[0][0]:
        return _MISSING
    first = parts[0][0]
    obj = dict.get(namespace, first, _MISSING)
    if obj is _MISSING:
        b = dict.get(namespace, "__builtins__", builtins)
        obj = dict.get(b, first, _MISSING) if isinstance(b, dict) else vars(builtins).get(first, _MISSING)
    if obj is _MISSING and code:
        obj = _imported_in(code, first)
    if obj is _MISSING and code:
        obj = _assigned_in(namespace, code, first, calls)
    for name, literal in parts[1:]:
        if obj is _MISSING or isinstance(obj, _Unevaluated):
            return _MISSING
        obj = _static_attr(obj, name) if name else _index(obj, literal)
    return obj


def _index(obj: Any, literal: str) -> Any:
    try:
        key = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return _MISSING
    try:
        if isinstance(obj, dict):
            return dict.get(obj, key, _MISSING)
        if type(obj) in _SAFE_MAPPINGS:
            return obj.get(key, _MISSING)
        if type(obj) in (list, tuple) and type(key) is int:
            return obj[key]
    except (TypeError, IndexError):
        pass
    return _MISSING


def _imported_in(code: str, name: str) -> Any:
    """What ``name`` would be after the ``import`` statements in ``code``, if the module is
    already imported (nothing is imported here)."""
    for m in re.finditer(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+)?import[ \t]+\(?([^)\n]+)", code, re.MULTILINE):
        source = m.group(1)
        for part in m.group(2).split(","):
            words = part.split()
            if len(words) == 3 and words[1] == "as" and words[2] == name:
                target = words[0]
            elif len(words) == 1 and words[0].split(".")[0] == name:
                target = name if source is None else words[0]
            else:
                continue
            if source is None:
                return sys.modules.get(target, _MISSING)
            mod = sys.modules.get(source)
            return _static_attr(mod, target) if mod is not None else _MISSING
    return _MISSING


def _assigned_in(namespace: dict[str, Any], code: str, name: str, calls: bool) -> Any:
    """The literal the cell assigns to ``name`` (``xs = [1]``), or the class of an instance it
    creates (``c = Counter()``), from the last such assignment in ``code``; nothing runs."""
    found = None
    for found in re.finditer(rf"^[ \t]*{re.escape(name)}[ \t]*=(?!=)[ \t]*(.+)$", code, re.MULTILINE):
        pass
    if found is None:
        return _MISSING
    rhs = found.group(1).strip()
    value = _literal(rhs)
    if value is not _MISSING:
        return value
    call = re.fullmatch(rf"((?:{_ID})(?:[ \t]*\.[ \t]*{_ID})*)[ \t]*\(.*\)", rhs) if calls else None
    if call and call.group(1) != name:
        cls = _resolve(namespace, call.group(1))
        if isinstance(cls, type):
            return cls
    return _MISSING


def _instance_dict(obj: Any) -> dict[str, Any] | None:
    slot = _static(type(obj), "__dict__")
    if slot is not _MISSING and not isinstance(slot, (types.GetSetDescriptorType, types.MemberDescriptorType)):
        return None
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    return d if isinstance(d, dict) else None


def _static(obj: Any, name: str) -> Any:
    try:
        return _inspect.getattr_static(obj, name)
    except AttributeError:
        return _MISSING
    except Exception:
        return _MISSING


def _static_attr(obj: Any, name: str) -> Any:
    """``obj.name`` where that needs no user code; ``_Unevaluated`` for a property or other
    Python-level descriptor; ``_MISSING`` when absent (``__getattr__`` is not consulted)."""
    if isinstance(obj, type):
        meta = _lookup(type(obj), name)
        own = _MISSING if _is_data_descriptor(meta) else _lookup(obj, name)  # data descriptors
        if own is not _MISSING:  # of the metaclass (like type.__dict__) win over the class's
            if isinstance(own, (staticmethod, classmethod)) or type(own) in _C_DESCRIPTORS:
                return _bind(own, None, obj)
            if isinstance(own, (types.FunctionType, property)) or not hasattr(type(own), "__get__"):
                return own
            return _Unevaluated(own, obj, name)
        attr = meta  # from here on the class is an instance of its metaclass
    else:
        attr = _static(obj, name)
    if attr is _MISSING:
        return _MISSING
    inst = _instance_dict(obj)
    if inst is not None and dict.get(inst, name, _MISSING) is attr:
        return attr
    owner = type(obj)
    if isinstance(attr, types.FunctionType):
        return types.MethodType(attr, obj)
    if isinstance(attr, (staticmethod, classmethod)) or type(attr) in _C_DESCRIPTORS:
        return _bind(attr, obj, owner)
    if hasattr(type(attr), "__get__") and not isinstance(attr, (types.BuiltinFunctionType, type)):
        return _Unevaluated(attr, owner, name)
    return attr


def _lookup(cls: type, name: str) -> Any:
    """``name`` in the dicts of ``cls``'s MRO (not its metaclass), or ``_MISSING``."""
    for klass in _mro(cls):
        d = _class_dict(klass)
        if name in d:
            return d[name]
    return _MISSING


def _is_data_descriptor(attr: Any) -> bool:
    t = type(attr)
    return attr is not _MISSING and (_lookup(t, "__set__") is not _MISSING or _lookup(t, "__delete__") is not _MISSING)


def _mro(cls: type) -> tuple[type, ...]:
    try:
        return type.__dict__["__mro__"].__get__(cls)  # no metaclass code
    except TypeError:
        return (cls,)


def _class_dict(cls: Any) -> Any:
    try:
        return type.__dict__["__dict__"].__get__(cls)  # the real mappingproxy, no metaclass code
    except TypeError:
        return {}


def _bind(attr: Any, obj: Any, owner: type) -> Any:
    try:
        return type(attr).__get__(attr, obj, owner)
    except Exception:
        return _MISSING


def _attr_names(obj: Any) -> list[str]:
    try:
        names = dir(obj)
    except Exception:
        names = list(vars(type(obj)))
        inst = _instance_dict(obj)
        names += list(inst or ())
    return [n for n in names if isinstance(n, str)]


# -- inspection -------------------------------------------------------------------------------


def _target_at(code: str, cursor: int) -> tuple[str, int] | None:
    """The chain to inspect and its end offset: the name under or just before the cursor or,
    inside a call's arguments when the cursor is not inside a name, the callee."""
    end = cursor
    while end < len(code) and (code[end].isalnum() or code[end] == "_"):
        end += 1
    ctx = _scan(code[:cursor])
    if ctx.comment:
        return None
    if end == cursor:
        for opener, pos in reversed(ctx.brackets):
            if opener == "(":
                chain = _chain_end(code[:pos].rstrip())
                if chain is not None and chain not in _KEYWORDS:
                    return chain, pos
                break
    if ctx.string is not None:
        return None
    chain = _chain_end(code[:end])
    return None if chain is None or chain in _KEYWORDS else (chain, end)


def _signature(obj: Any) -> _inspect.Signature | None:
    if isinstance(obj, _Unevaluated):
        return None
    target = obj
    if not isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                            functools.partial, *_C_DESCRIPTORS, types.MethodWrapperType)):
        call = _lookup(type(obj), "__call__")
        if not isinstance(call, types.FunctionType):
            return None
        target = types.MethodType(call, obj)
    try:
        return _inspect.signature(target)
    except (ValueError, TypeError, RecursionError):
        return None


class _Unquoted(str):
    """A string annotation (``from __future__ import annotations``), shown without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _signature_text(sig: _inspect.Signature) -> str:
    def unquote(a: Any) -> Any:
        return _Unquoted(a) if isinstance(a, str) else a

    try:
        params = [p.replace(annotation=unquote(p.annotation)) for p in sig.parameters.values()]
        return str(sig.replace(parameters=params, return_annotation=unquote(sig.return_annotation)))
    except (ValueError, TypeError):
        return str(sig)


def _type_name(obj: Any) -> str:
    t = type(obj)
    module = getattr(t, "__module__", None)
    return t.__qualname__ if module in ("builtins", "__main__", None) else f"{module}.{t.__qualname__}"


_DOCUMENTED_AS_ITSELF = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                        types.MethodType, functools.partial, property, *_C_DESCRIPTORS)


def _doc(obj: Any) -> str | None:
    """The docstring of a class, function or module, or of an instance's class."""
    target = obj if isinstance(obj, _DOCUMENTED_AS_ITSELF) else type(obj)
    try:
        doc = _inspect.getdoc(target)
    except Exception:
        return None
    if doc and target is not object and doc == _inspect.getdoc(object):
        return None
    return doc


_SCALARS = (int, float, complex, bool, str, bytes, type(None), range, slice)


def _safe_repr(obj: Any) -> str | None:
    """``repr(obj)`` where that runs no user code (scalars, default ``object`` reprs)."""
    t = type(obj)
    if t not in _SCALARS and _static(t, "__repr__") is not object.__repr__:
        return None
    try:
        text = repr(obj)
    except Exception:
        return None
    return text if len(text) <= 300 else text[:300] + "..."


def _describe(name: str, obj: Any) -> str:
    lines = []
    if isinstance(obj, _Unevaluated):
        d = obj.descriptor
        kind = type(d).__qualname__
        fget = getattr(d, "fget", None) if isinstance(d, property) else getattr(d, "func", None)
        sig = _signature(fget) if fget is not None else None
        ret = sig.return_annotation if sig is not None else _inspect.Signature.empty
        if ret is not _inspect.Signature.empty:
            lines.append(f"Returns:   {ret if isinstance(ret, str) else _inspect.formatannotation(ret)}")
        lines.append(f"Type:      {kind} (not evaluated: reading it runs code)")
        lines.append(f"Defined in: {obj.owner.__qualname__}")
        doc = _doc(fget) if fget is not None else None
        lines.append("Docstring:\n" + (doc or "<no docstring>"))
        return "\n".join(lines)
    sig = _signature(obj)
    short = name.rpartition(".")[2]
    if sig is not None:
        label = "Init signature:" if isinstance(obj, type) else "Signature:"
        lines.append(f"{label} {short}{_signature_text(sig)}")
    lines.append(f"Type:      {_type_name(obj)}")
    text = _safe_repr(obj)
    if text is not None and not isinstance(obj, (types.FunctionType, type, types.MethodType)):
        lines.append(f"String form: {text}")
    if type(obj) in (list, tuple, dict, set, frozenset, str, bytes):
        lines.append(f"Length:    {len(obj)}")
    where = _source_file(obj)
    if where:
        lines.append(f"File:      {where}")
    doc = _doc(obj) or "<no docstring>"
    lines.append("Docstring:\n" + (doc if len(doc) <= _MAX_DOC else doc[:_MAX_DOC] + "\n[...]"))
    return "\n".join(lines)


_MAX_DOC = 20_000


def _source_file(obj: Any) -> str | None:
    target = obj
    if isinstance(obj, types.MethodType):
        target = obj.__func__
    if isinstance(target, types.FunctionType):
        return target.__code__.co_filename
    if isinstance(target, (type, types.ModuleType)):
        try:
            return _inspect.getfile(target)
        except (TypeError, OSError):
            return None
    return None


# -- jedi -------------------------------------------------------------------------------------

_jedi: Any = None
_jedi_failed = False
_jedi_busy = threading.Lock()


def _jedi_enabled() -> bool:
    if USE_JEDI is False or _jedi_failed:
        return False
    return USE_JEDI is True or not os.environ.get("CELLBOX_NO_JEDI")


def _load_jedi() -> Any:
    global _jedi, _jedi_failed
    if _jedi is None:
        try:
            import jedi
            from jedi.inference.compiled import access, mixed
        except Exception:
            _jedi_failed = True
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
        wrapped = _static(obj, "__wrapped__")
        if wrapped is _MISSING or isinstance(obj, type) or hasattr(type(wrapped), "__get__") and not callable(wrapped):
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
    keys = _dict_keys(obj)[:50] if isinstance(obj, dict) else []
    return [self._create_access_path(k) for k in keys]


def _with_jedi(call: Any, budget: float | None) -> Any:
    """Run ``call`` in a worker thread within the budget; None if jedi is off, busy, failed or
    late (a late call finishes in the background, holding the lock until it does)."""
    if not _jedi_enabled() or not _jedi_busy.acquire(blocking=False):
        return None
    box: list[Any] = []

    def work() -> None:
        try:
            _load_jedi()
            box.append(call())
        except Exception:
            pass
        finally:
            _jedi_busy.release()

    worker = threading.Thread(target=work, name="cellbox-editor", daemon=True)
    try:
        worker.start()
    except RuntimeError:
        _jedi_busy.release()
        return None
    worker.join(JEDI_BUDGET if budget is None else budget)
    return box[0] if box and not worker.is_alive() else None


def _line_col(code: str, offset: int) -> tuple[int, int]:
    before = code[:offset]
    line = before.count("\n") + 1
    return line, len(before) - (before.rfind("\n") + 1)


def _jedi_complete(namespace: dict[str, Any], code: str, cursor: int) -> tuple[list[str], int]:
    line, col = _line_col(code, cursor)
    found = _jedi.Interpreter(code, [namespace]).complete(line, col)
    if not found:
        return [], cursor
    length = found[0].get_completion_prefix_length()
    matches = [c.name_with_symbols for c in found[: MAX_MATCHES * 4]
               if c.get_completion_prefix_length() == length]
    return matches, cursor - length


def _jedi_inspect(namespace: dict[str, Any], code: str, offset: int) -> str | None:
    line, col = _line_col(code, offset)
    for name in _jedi.Interpreter(code, [namespace]).infer(line, col):
        doc = name.docstring()
        kind = name.full_name or name.name
        return f"{doc}\n\nType:      {name.type} ({kind}, inferred)" if doc else f"Type:      {name.type} ({kind}, inferred)"
    return None


def _reset_after_fork() -> None:
    global _jedi_busy
    _jedi_busy = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
