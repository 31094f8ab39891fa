"""Finding the object a chain names, and what it holds, without running user code.

Invariant: nothing here evaluates a property or another Python-level descriptor, nor calls a
``__getattr__``, ``__getitem__`` or ``keys`` of user code, nor imports a module. A chain's
first name comes from the namespace dict, the builtins, an ``import`` in the cell of a module
already in ``sys.modules``, or a literal (``ast.literal_eval``) or ``Cls()`` assigned in the
cell. Attributes are read with ``inspect.getattr_static`` and the class dicts of the MRO (no
metaclass code) and bound only for plain functions, ``staticmethod``, ``classmethod`` and
C-level descriptors; any other descriptor comes back as ``Unevaluated``. Subscripts index only
real dicts, lists, tuples, ``os.environ`` and ``mappingproxy``. The one exception is
``attr_names``, which calls ``dir()``, so a user-defined ``__dir__`` does run.

``MISSING`` is the answer when an object cannot be found this way.
"""

from __future__ import annotations

import ast
import builtins
import inspect as _inspect
import os
import re
import sys
import types
from typing import Any

from cellbox.child.scanner import CHAIN_PART, ID

MISSING: Any = object()


class Unevaluated:
    """An attribute whose value needs user code (a property or another Python descriptor)."""

    __slots__ = ("descriptor", "name", "owner")

    def __init__(self, descriptor: Any, owner: type, name: str) -> None:
        self.descriptor = descriptor
        self.owner = owner
        self.name = name


C_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType, types.MethodDescriptorType,
                 types.WrapperDescriptorType, types.ClassMethodDescriptorType)


def resolve(namespace: dict[str, Any], chain: str, code: str = "", *, calls: bool = False) -> Any:
    """The object a chain (``a.b["k"][0]``) denotes, found without running user code, or
    ``MISSING``.

    The first name comes from the namespace, the builtins, an ``import`` in ``code`` of a
    module that is already imported, or an assignment in ``code`` (see ``_assigned_in``;
    ``calls``: let ``c = Cls()`` stand for ``Cls``, which is right for listing attributes
    only). Attributes go through ``_static_attr``; subscripts index only real dicts, lists
    and tuples.
    """
    parts = CHAIN_PART.findall(chain)
    if not parts or not parts[0][0]:
        return MISSING
    first = parts[0][0]
    obj = dict.get(namespace, first, MISSING)
    if obj is MISSING:
        b = dict.get(namespace, "__builtins__", builtins)
        obj = dict.get(b, first, MISSING) if isinstance(b, dict) else vars(builtins).get(first, MISSING)
    if obj is MISSING and code:
        obj = _imported_in(code, first)
    if obj is MISSING and code:
        obj = _assigned_in(namespace, code, first, calls)
    for name, literal in parts[1:]:
        if obj is MISSING or isinstance(obj, Unevaluated):
            return MISSING
        obj = _static_attr(obj, name) if name else _index(obj, literal)
    return obj


def _index(obj: Any, literal: str) -> Any:
    try:
        key = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return MISSING
    try:
        if isinstance(obj, dict):
            return dict.get(obj, key, MISSING)
        if type(obj) in _SAFE_MAPPINGS:
            return obj.get(key, MISSING)
        if type(obj) in (list, tuple) and type(key) is int:
            return obj[key]
    except (TypeError, IndexError):
        pass
    return MISSING


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
                return sys.modules.get(target, MISSING)
            mod = sys.modules.get(source)
            return _static_attr(mod, target) if mod is not None else MISSING
    return MISSING


def _assigned_in(namespace: dict[str, Any], code: str, name: str, calls: bool) -> Any:
    """The literal the cell assigns to ``name`` (``xs = [1]``), or the class of an instance it
    creates (``c = Counter()``), from the last such assignment in ``code``; nothing runs."""
    found = None
    for found in re.finditer(rf"^[ \t]*{re.escape(name)}[ \t]*=(?!=)[ \t]*(.+)$", code, re.MULTILINE):
        pass
    if found is None:
        return MISSING
    rhs = found.group(1).strip()
    value = literal_value(rhs)
    if value is not MISSING:
        return value
    call = re.fullmatch(rf"((?:{ID})(?:[ \t]*\.[ \t]*{ID})*)[ \t]*\(.*\)", rhs) if calls else None
    if call and call.group(1) != name:
        cls = resolve(namespace, call.group(1))
        if isinstance(cls, type):
            return cls
    return MISSING


def _instance_dict(obj: Any) -> dict[str, Any] | None:
    slot = getattr_static(type(obj), "__dict__")
    if slot is not MISSING and not isinstance(slot, (types.GetSetDescriptorType, types.MemberDescriptorType)):
        return None
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    return d if isinstance(d, dict) else None


def getattr_static(obj: Any, name: str) -> Any:
    """``inspect.getattr_static(obj, name)``, or ``MISSING`` instead of any exception."""
    try:
        return _inspect.getattr_static(obj, name)
    except AttributeError:
        return MISSING
    except Exception:
        return MISSING


def _static_attr(obj: Any, name: str) -> Any:
    """``obj.name`` where that needs no user code; ``Unevaluated`` for a property or other
    Python-level descriptor; ``MISSING`` when absent (``__getattr__`` is not consulted)."""
    if isinstance(obj, type):
        meta = lookup(type(obj), name)
        own = MISSING if _is_data_descriptor(meta) else lookup(obj, name)  # data descriptors
        if own is not MISSING:  # of the metaclass (like type.__dict__) win over the class's
            if isinstance(own, (staticmethod, classmethod)) or type(own) in C_DESCRIPTORS:
                return _bind(own, None, obj)
            if isinstance(own, (types.FunctionType, property)) or not hasattr(type(own), "__get__"):
                return own
            return Unevaluated(own, obj, name)
        attr = meta  # from here on the class is an instance of its metaclass
    else:
        attr = getattr_static(obj, name)
    if attr is MISSING:
        return MISSING
    inst = _instance_dict(obj)
    if inst is not None and dict.get(inst, name, MISSING) is attr:
        return attr
    owner = type(obj)
    if isinstance(attr, types.FunctionType):
        return types.MethodType(attr, obj)
    if isinstance(attr, (staticmethod, classmethod)) or type(attr) in C_DESCRIPTORS:
        return _bind(attr, obj, owner)
    if hasattr(type(attr), "__get__") and not isinstance(attr, (types.BuiltinFunctionType, type)):
        return Unevaluated(attr, owner, name)
    return attr


def lookup(cls: type, name: str) -> Any:
    """``name`` in the dicts of ``cls``'s MRO (not its metaclass), or ``MISSING``."""
    for klass in _mro(cls):
        d = _class_dict(klass)
        if name in d:
            return d[name]
    return MISSING


def _is_data_descriptor(attr: Any) -> bool:
    t = type(attr)
    return attr is not MISSING and (lookup(t, "__set__") is not MISSING or lookup(t, "__delete__") is not MISSING)


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
        return MISSING


def attr_names(obj: Any) -> list[str]:
    """``dir(obj)`` (a user-defined ``__dir__`` runs); if that fails, the names in its class's
    and its own ``__dict__``."""
    try:
        names = dir(obj)
    except Exception:
        names = list(vars(type(obj)))
        inst = _instance_dict(obj)
        names += list(inst or ())
    return [n for n in names if isinstance(n, str)]


_SAFE_MAPPINGS = (types.MappingProxyType, type(os.environ))


def is_mapping(obj: Any) -> bool:
    """True iff ``obj`` is a dict or a stdlib mapping whose keys can be read without user code."""
    return isinstance(obj, dict) or type(obj) in _SAFE_MAPPINGS


def dict_keys(d: Any) -> list[Any]:
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


def literal_value(text: str) -> Any:
    """The value of the Python literal ``text`` (``ast.literal_eval``), or ``MISSING``."""
    if len(text) > 100_000:
        return MISSING
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return MISSING
