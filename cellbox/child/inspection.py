"""The text of ``session/inspect``: which chain the cursor points at, and a description of the
object it names in the style of IPython's ``obj?`` (signature, type, string form, length,
file, docstring).

The object comes from ``cellbox.child.resolver``, so reaching it ran no user code, and the
description adds little: a repr only for scalars and default ``object`` reprs, a property
(``Unevaluated``) described from its getter, never read. ``inspect.signature`` and
``inspect.getdoc`` do read attributes such as ``__signature__`` and ``__doc__``.
"""

from __future__ import annotations

import functools
import inspect as _inspect
import types
from typing import Any

from cellbox.child.resolver import C_DESCRIPTORS, Unevaluated, getattr_static, lookup
from cellbox.child.scanner import KEYWORDS, chain_end, scan


def target_at(code: str, cursor: int) -> tuple[str, int] | None:
    """The chain to inspect and its end offset: the name under or just before the cursor or,
    inside a call's arguments when the cursor is not inside a name, the callee."""
    end = cursor
    while end < len(code) and (code[end].isalnum() or code[end] == "_"):
        end += 1
    ctx = scan(code[:cursor])
    if ctx.comment:
        return None
    if end == cursor:
        for opener, pos in reversed(ctx.brackets):
            if opener == "(":
                chain = chain_end(code[:pos].rstrip())
                if chain is not None and chain not in KEYWORDS:
                    return chain, pos
                break
    if ctx.string is not None:
        return None
    chain = chain_end(code[:end])
    return None if chain is None or chain in KEYWORDS else (chain, end)


def signature(obj: Any) -> _inspect.Signature | None:
    """The signature of calling ``obj`` (for an instance, of its class's Python ``__call__``);
    None for an ``Unevaluated`` attribute or where there is none."""
    if isinstance(obj, Unevaluated):
        return None
    target = obj
    if not isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                            functools.partial, *C_DESCRIPTORS, types.MethodWrapperType)):
        call = lookup(type(obj), "__call__")
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
                        types.MethodType, functools.partial, property, *C_DESCRIPTORS)


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
    if t not in _SCALARS and getattr_static(t, "__repr__") is not object.__repr__:
        return None
    try:
        text = repr(obj)
    except Exception:
        return None
    return text if len(text) <= 300 else text[:300] + "..."


def describe(name: str, obj: Any) -> str:
    """The help text for ``obj``, which the chain ``name`` denotes."""
    lines = []
    if isinstance(obj, Unevaluated):
        d = obj.descriptor
        kind = type(d).__qualname__
        fget = getattr(d, "fget", None) if isinstance(d, property) else getattr(d, "func", None)
        sig = signature(fget) if fget is not None else None
        ret = sig.return_annotation if sig is not None else _inspect.Signature.empty
        if ret is not _inspect.Signature.empty:
            lines.append(f"Returns:   {ret if isinstance(ret, str) else _inspect.formatannotation(ret)}")
        lines.append(f"Type:      {kind} (not evaluated: reading it runs code)")
        lines.append(f"Defined in: {obj.owner.__qualname__}")
        doc = _doc(fget) if fget is not None else None
        lines.append("Docstring:\n" + (doc or "<no docstring>"))
        return "\n".join(lines)
    sig = signature(obj)
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
