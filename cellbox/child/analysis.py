"""Blocking-I/O detection in async code, with the session's import-alias table.

Two steps, so the expensive one is cached with the compiled cell (``compiler.LRU``):

- ``scan(tree, is_async, source)`` walks the AST once per distinct cell and keeps what matters:
  the module-level import bindings and, for every *async scope* (the top level of a cell that
  awaits, and the body of every ``async def``), its call sites, its local imports and its simple
  assignments. Nested sync ``def``/``lambda`` bodies are not async scopes: they run wherever
  they are called (e.g. in ``asyncio.to_thread``). A cell whose source has no ``async`` and
  that does not await is only scanned for imports.
- ``Detector.check(facts, namespace)`` runs per cell: it adds the cell's imports to the alias
  table (``import time as t``, ``from time import sleep as zz``, earlier cells included), then
  resolves each call site's attribute chain (``t.sleep``, ``urllib.request.urlopen``,
  ``Path("x").read_text``, ``p.read_text`` with ``p = Path(...)`` or a Path object in the
  namespace) and reports the blocking ones as ``Warning(kind="blocking-call")``.

Calls that are awaited directly (``await x.get()``) are never blocking. Counters:
``detected_blocking_import`` (an import of a blocking module or name), ``detected_blocking_call``
(one per warning), ``missed_attribute_chain`` (a call through an attribute chain whose base
could not be resolved, ending in a name that a blocking call also ends with, e.g. ``s.recv()``).
Known gaps: flow-insensitive (a later rebinding of an alias is not seen), parameters shadowing
module names are not tracked, and calls inside sync functions called from async code are not
followed.
"""

from __future__ import annotations

import ast
import builtins
import sys
from typing import Any

from cellbox.protocol.messages import DetectionPolicy, Warning

COUNTERS = ("detected_blocking_import", "detected_blocking_call", "missed_attribute_chain")

BLOCKING_MODULES = ("requests", "urllib.request", "subprocess", "socket", "http.client")
BLOCKING_NAMES = frozenset({
    "time.sleep", "os.system", "os.popen", "os.wait", "os.waitpid", "open", "io.open",
    *(f"pathlib.Path.{m}" for m in ("read_text", "write_text", "read_bytes", "write_bytes",
                                     "open")),
})
#: pathlib calls and attributes whose result is again a path
_PATH_RESULTS = frozenset({
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath",
    *(f"pathlib.Path.{m}" for m in ("home", "cwd", "joinpath", "resolve", "absolute",
                                     "expanduser", "with_name", "with_suffix", "with_stem",
                                     "parent", "relative_to")),
})
#: endings of attribute chains worth counting as missed when their base is unknown
_SUSPICIOUS = frozenset({
    "sleep", "system", "popen", "urlopen", "read_text", "write_text", "read_bytes",
    "write_bytes", "recv", "recv_into", "recvfrom", "sendall", "accept", "check_output",
    "check_call", "communicate", "getaddrinfo", "create_connection",
})


class Scope:
    """One async scope of a cell: call sites, local imports and simple assignments."""

    __slots__ = ("calls", "aliases", "assigned")

    def __init__(self) -> None:
        self.calls: list[ast.Call] = []
        self.aliases: dict[str, str] = {}
        self.assigned: dict[str, ast.expr] = {}


class Facts:
    """What ``scan`` keeps of a cell: ``imports`` as (local name, target, imported module)."""

    __slots__ = ("imports", "scopes")

    def __init__(self, imports: list[tuple[str, str, str]], scopes: list[Scope]) -> None:
        self.imports = imports
        self.scopes = scopes


def scan(tree: ast.Module, is_async: bool, source: str) -> Facts:
    imports: list[tuple[str, str, str]] = []
    if "import" in source:
        _module_imports(tree.body, imports)
    scopes: list[Scope] = []
    if is_async:
        scopes.append(_scope(tree.body))
    if "async" in source or "await" in source:  # "await": defs made async by rewrite.py
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef):
                scopes.append(_scope(node.body))
    return Facts(imports, scopes)


def _bindings(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str, str]]:
    out = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                out.append((alias.asname, alias.name, alias.name))
            else:
                top = alias.name.partition(".")[0]
                out.append((top, top, alias.name))
    elif node.module and not node.level:
        for alias in node.names:
            if alias.name != "*":
                target = f"{node.module}.{alias.name}"
                out.append((alias.asname or alias.name, target, target))
    return out


def _module_imports(stmts: list[ast.stmt], out: list[tuple[str, str, str]]) -> None:
    for stmt in stmts:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            out.extend(_bindings(stmt))
        elif not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody"):
                _module_imports(getattr(stmt, field, None) or [], out)
            for handler in getattr(stmt, "handlers", None) or []:
                _module_imports(handler.body, out)


def _scope(stmts: list[ast.stmt]) -> Scope:
    scope = Scope()
    awaited: set[int] = set()
    stack: list[ast.AST] = list(reversed(stmts))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # another scope (async defs get their own)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for local, target, _ in _bindings(node):
                scope.aliases[local] = target
            continue
        if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
            awaited.add(id(node.value))
        elif isinstance(node, ast.Call) and id(node) not in awaited:
            scope.calls.append(node)
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)):
            scope.assigned[node.targets[0].id] = node.value
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return scope


class Detector:
    """Per-session detection state: policy, alias table and counters."""

    def __init__(self, policy: DetectionPolicy | None = None) -> None:
        self.policy = policy or DetectionPolicy()
        self.enabled = self.policy.enabled
        self.aliases: dict[str, str] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._modules = (*BLOCKING_MODULES, *self.policy.extra_modules)
        self._names = BLOCKING_NAMES | set(self.policy.extra_names)
        self._ignored = tuple(self.policy.ignored_names)
        self._suspicious = _SUSPICIOUS | {n.rpartition(".")[2] for n in self.policy.extra_names}

    def check(self, facts: Facts | None, namespace: dict[str, Any]) -> tuple[list[Warning],
                                                                             dict[str, int]]:
        """Warnings for one cell and the counter deltas (also added to ``self.counters``)."""
        if facts is None or not self.enabled:
            return [], {}
        deltas: dict[str, int] = {}

        def bump(key: str) -> None:
            deltas[key] = deltas.get(key, 0) + 1

        for local, target, module in facts.imports:
            self.aliases[local] = target
            if self.is_blocking(module, prefix_ok=True):
                bump("detected_blocking_import")
        warnings: list[Warning] = []
        seen: set[tuple[str, int]] = set()
        for scope in facts.scopes:
            for target in scope.aliases.values():
                if self.is_blocking(target, prefix_ok=True):
                    bump("detected_blocking_import")
            for call in scope.calls:
                name = self._resolve(call.func, scope, namespace, 0)
                if name is None:
                    if isinstance(call.func, ast.Attribute) and call.func.attr in self._suspicious:
                        bump("missed_attribute_chain")
                    continue
                if not self.is_blocking(name) or (name, call.lineno) in seen:
                    continue
                seen.add((name, call.lineno))
                warnings.append(Warning(kind="blocking-call", name=name, line=call.lineno,
                                        message=_message(name)))
        if warnings:
            deltas["detected_blocking_call"] = len(warnings)
        for key, n in deltas.items():
            self.counters[key] += n
        return warnings, deltas

    def is_blocking(self, name: str, *, prefix_ok: bool = False) -> bool:
        """True iff ``name`` (a dotted target) is a blocking call under the policy.

        ``prefix_ok`` also accepts the blocking modules themselves (for imports).
        """
        for ignored in self._ignored:
            if name == ignored or name.startswith(ignored + "."):
                return False
        if name in self._names:
            return True
        for module in self._modules:
            if name.startswith(module + ".") or (prefix_ok and name == module):
                return True
        return False

    def _resolve(self, node: ast.expr, scope: Scope, ns: dict[str, Any],
                 depth: int) -> str | None:
        if depth > 8:
            return None
        if isinstance(node, ast.Name):
            name = node.id
            if name in scope.aliases:
                return scope.aliases[name]
            if name in scope.assigned:
                return self._resolve(scope.assigned[name], scope, ns, depth + 1)
            if name in self.aliases:
                return self.aliases[name]
            return _from_namespace(name, ns)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value, scope, ns, depth + 1)
            if base is None:
                return None
            if base == "pathlib.Path()":
                base = "pathlib.Path"
            full = f"{base}.{node.attr}"
            return "pathlib.Path()" if full in _PATH_RESULTS and node.attr == "parent" else full
        if isinstance(node, ast.Call):
            callee = self._resolve(node.func, scope, ns, depth + 1)
            return "pathlib.Path()" if callee in _PATH_RESULTS else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left = self._resolve(node.left, scope, ns, depth + 1)
            return "pathlib.Path()" if left in ("pathlib.Path()", "pathlib.Path") else None
        return None


def _from_namespace(name: str, ns: dict[str, Any]) -> str | None:
    """Resolve a global that no import in any cell bound, from the live namespace."""
    obj = ns.get(name, _MISSING)
    if obj is _MISSING:
        if name == "open" and getattr(builtins, "open", None) is _OPEN:
            return "open"
        return None
    if isinstance(obj, type(sys)):
        return obj.__name__
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(obj, pathlib.PurePath):
        return "pathlib.Path()"
    if obj is _OPEN:
        return "open"
    return None


_MISSING = object()
_OPEN = builtins.open


def _message(name: str) -> str:
    if name == "time.sleep":
        advice = "use `await asyncio.sleep(...)` instead"
    elif name.startswith("subprocess.") or name in ("os.system", "os.popen"):
        advice = "use `await asyncio.create_subprocess_exec(...)` or `asyncio.to_thread`"
    elif name.startswith("pathlib.Path."):
        advice = f"use `await asyncio.to_thread(path.{name.rpartition('.')[2]})`"
    else:
        advice = f"use `await asyncio.to_thread({name}, ...)`"
    return f"{name}() blocks the event loop when called from async code; {advice}"
