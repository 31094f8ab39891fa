"""Our own completer: what the live objects say can follow the cursor.

``own_complete`` reads the context (``cellbox.child.scanner``) and answers for an ``import``
or ``from`` statement, a subscript of a dict, a name (with ``name=`` for the parameters of a
call it can resolve), an attribute of a chain, a literal or a call; ``complete_key_string``
answers inside a string that opens a dict subscript. Objects come from
``cellbox.child.resolver``, so no user code runs. Modules that are not imported are not
imported here either: their submodules are listed with ``importlib.machinery.PathFinder`` and
``pkgutil``, their names read from their source with ``ast``.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.machinery
import inspect as _inspect
import os
import pkgutil
import re
import sys
import time
import types
from typing import Any

from cellbox.child.inspection import signature
from cellbox.child.resolver import (
    MISSING,
    Unevaluated,
    attr_names,
    dict_keys,
    getattr_static,
    is_mapping,
    literal_value,
    resolve,
)
from cellbox.child.scanner import CHAIN, ID, KEYWORDS, Context, chain_end

_PREFIX = re.compile(rf"(?:{ID})?\Z")
_IMPORT = re.compile(r"import[ \t]+(?P<rest>.*)\Z", re.DOTALL)
_FROM = re.compile(r"from[ \t]+(?P<mod>[\w.]*)(?P<sp>[ \t]+(?P<kw>\w*)(?P<imp>[ \t]+\(?(?P<rest>.*))?)?\Z", re.DOTALL)


def complete_key_string(namespace: dict[str, Any], code: str, cursor: int,
                        ctx: Context) -> tuple[list[str], int, int] | None:
    """Keys for ``d["ab``, or None if the string is not a key of a real dict."""
    assert ctx.string is not None
    pos, prefix, quote = ctx.string
    before = code[:cursor]
    head = before[:pos].rstrip()
    if len(quote) != 1 or "f" in prefix.lower() or not head.endswith("["):
        return None
    obj = _subject(namespace, head[:-1], code)
    if not is_mapping(obj):
        return None
    typed = before[pos + len(prefix) + 1 :]
    want = bytes if "b" in prefix.lower() else str
    matches = []
    for key in dict_keys(obj):
        if type(key) is want:
            body = repr(key)[1 + (want is bytes) : -1]
            if repr(key)[-1] != quote:
                body = body.replace("\\'", "'").replace(quote, "\\" + quote)
            if body.startswith(typed):
                matches.append(prefix + quote + body + quote)
    end = cursor + 1 if code[cursor : cursor + 1] == quote else cursor
    return matches, pos, end


def own_complete(namespace: dict[str, Any], code: str, cursor: int,
                 ctx: Context) -> tuple[list[str], int, bool]:
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
        if re.fullmatch(r"-?\w*", typed) and is_mapping(obj):
            keys = [r for r in _key_literals(obj) if r.startswith(typed)]
            if (keys and not typed) or target is None or target[0] is not None:
                return keys, cursor - len(typed), True
            names = [n for n in _names(namespace, code) if n.startswith(target[1])]
            return keys + names, cursor - len(typed), True
    if target is None:
        obj = _value_before_dot(namespace, code, before, ctx)
        if obj is MISSING:
            return [], cursor, False
        prefix = _PREFIX.search(before).group()  # type: ignore[union-attr]
        return [n for n in attr_names(obj) if n.startswith(prefix)], cursor - len(prefix), True
    chain, prefix = target
    start = cursor - len(prefix)
    if chain is not None:
        obj = resolve(namespace, chain, code, calls=True)
        if obj is MISSING or isinstance(obj, Unevaluated):
            return [], start, False
        return [n for n in attr_names(obj) if n.startswith(prefix)], start, True
    matches = [n for n in _names(namespace, code) if n.startswith(prefix)]
    exact = True
    if ctx.brackets and ctx.brackets[-1][0] == "(":
        kwargs = _keyword_args(namespace, code, before, ctx.brackets[-1][1], start)
        if kwargs is None:
            exact = False
        else:
            matches += [k for k in kwargs if k.startswith(prefix)]
    return matches, start, exact


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
        chain = chain_end(stripped[:-1].rstrip(" \t"))
        return None if chain is None else (chain, prefix)
    if not prefix and adjacent and adjacent in ")]}'\"":
        return None
    return None, prefix


def _value_before_dot(namespace: dict[str, Any], code: str, before: str, ctx: Context) -> Any:
    """What a literal or a call ends with before ``.prefix`` (``"s".up``, ``[1].app``,
    ``Counter().most``), found without running anything: a literal is read with
    ``ast.literal_eval``; a call of a class stands for that class (whose attributes an
    instance has), a call of a function annotated to return a class for that class."""
    head = before[: _PREFIX.search(before).start()].rstrip(" \t")  # type: ignore[union-attr]
    if not head.endswith("."):
        return MISSING
    end = len(head[:-1].rstrip())
    if ctx.last_string[1] == end:
        text = code[ctx.last_string[0] : end]
        return "" if "f" in text[:2].lower() else literal_value(text)  # an f-string is a str
    opener, start, close = ctx.last_closed
    if close != end:
        return MISSING
    callee = chain_end(code[:start].rstrip()) if opener == "(" else None
    if callee is None:
        previous = code[:start].rstrip()[-1:]
        if previous and (previous.isalnum() or previous in "_)]}'\""):
            return MISSING  # a subscript or a call of something that is not a plain chain
        return literal_value(code[start:end])
    func = resolve(namespace, callee, code)
    if isinstance(func, type):
        return func
    ret = getattr(signature(func), "return_annotation", None) if func is not MISSING else None
    if isinstance(ret, str) and CHAIN.fullmatch(ret):  # from __future__ import annotations
        home = func.__globals__ if isinstance(func, (types.FunctionType, types.MethodType)) else None
        ret = resolve(home, ret) if isinstance(home, dict) else MISSING
    return ret if isinstance(ret, type) else MISSING


def _subject(namespace: dict[str, Any], text: str, code: str) -> Any:
    """The live object named by the chain that ends ``text`` (before a ``[``)."""
    chain = chain_end(text.rstrip())
    return MISSING if chain is None else resolve(namespace, chain, code)


def _key_literals(d: dict[Any, Any]) -> list[str]:
    out = []
    for key in dict_keys(d):
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
        locations = getattr_static(mod, "__path__")
    else:
        spec = _find_spec(parent)
        locations = spec.submodule_search_locations if spec is not None else None
    if locations is not None and locations is not MISSING:
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
        if mod is not None and isinstance(getattr_static(mod, "__spec__"), importlib.machinery.ModuleSpec):
            spec = getattr_static(mod, "__spec__")
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
    names.update(KEYWORDS)
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
    chain = chain_end(before[:paren].rstrip())
    if chain is None:
        return None
    if chain in KEYWORDS:  # "if (", "not (": not a call
        return []
    func = resolve(namespace, chain, code)
    sig = signature(func) if func is not MISSING else None
    if sig is None:
        return None
    given = set(re.findall(r"(?:^|[(,])\s*(\w+)\s*=(?!=)", before[paren:]))
    kinds = (_inspect.Parameter.POSITIONAL_OR_KEYWORD, _inspect.Parameter.KEYWORD_ONLY)
    return [p.name + "=" for p in sig.parameters.values() if p.kind in kinds and p.name not in given]
