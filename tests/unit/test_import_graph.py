"""The import graph of ``cellbox/`` and ``bench/``: no cycles, and bench's layers hold.

The graph is built from the source (``ast``), nothing is imported. An edge is any import
statement: at top level, inside a function, or under ``if TYPE_CHECKING:`` (a module that
needs another's types depends on it; a cycle through a type-only import is a back-pointer,
see STYLE.md). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else
to ``pkg``. Run as a script to print the cycles: ``python -m
tests.unit.test_import_graph``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Cycles known and being removed, each as the set of its modules (a strongly connected
#: component). Empty this list as they go; the test then keeps them gone.
KNOWN_CYCLES: list[frozenset[str]] = []

#: bench's layers, bottom first: a module may import only from layers below its own.
BENCH_LAYERS: list[set[str]] = [
    {"bench.core"},
    {"bench.floor", "bench.cellbox_driver", "bench.jupyter_driver", "bench.bench_codec",
     "bench.bench_executor", "bench.completion_vs_ipython"},
    {"bench.scenarios", "bench.inchild", "bench.hops"},
    {"bench.runner", "bench.gate"},
    {"bench.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(*packages: str) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]  # a name inside a module: the module
        if target and target != name:
            out.add(target)

    for node in _imports(ast.parse(path.read_text(), str(path))):
        match node:
            case ast.Import(names=names):
                for alias in names:
                    add(alias.name)
            case ast.ImportFrom(module=module, names=names, level=level):
                base = module or ""
                if level:
                    anchor = package.split(".")[: len(package.split(".")) - (level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base)
    return out


def graph(*packages: str) -> dict[str, set[str]]:
    found = modules(*packages)
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# ---------------------------------------------------------------------------------------------


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_cellbox_but_the_known_ones():
    found = cycles(graph("cellbox"))
    # a known cycle that is being taken apart may shrink on the way
    unexpected = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert not unexpected, f"import cycles: {unexpected}"


def test_the_known_cycles_are_still_there():
    """Skips (visibly) once a known cycle is gone: then remove it from ``KNOWN_CYCLES``, so
    that it cannot come back. Not a failure, so that removing a cycle breaks nothing."""
    found = cycles(graph("cellbox"))
    stale = [sorted(known) for known in KNOWN_CYCLES if not any(c <= known for c in found)]
    if stale:
        pytest.fail(f"no longer cycles, remove from KNOWN_CYCLES: {stale}")


def test_the_client_core_does_no_io():
    """The sans-IO client connection imports only the protocol (and the stdlib/msgspec)."""
    edges = graph("cellbox")
    assert edges["cellbox.client.connection"] <= {
        "cellbox.protocol", "cellbox.protocol.errors", "cellbox.protocol.framing",
        "cellbox.protocol.jsonrpc", "cellbox.protocol.messages",
    }
    tree = ast.parse((ROOT / "cellbox/client/connection.py").read_text())
    imported = {a.name.split(".")[0] for n in _imports(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in _imports(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"anyio", "asyncio", "os", "time", "signal", "subprocess", "socket", "logging"}


def test_bench_has_no_cycles_and_imports_only_downwards():
    edges = graph("bench")
    assert cycles(edges) == []
    layer = {name: i for i, names in enumerate(BENCH_LAYERS) for name in names}
    assert set(edges) - {"bench"} == set(layer), "put every bench module in a layer"
    wrong = [
        f"{a} -> {b}"
        for a, targets in edges.items()
        for b in targets
        if b.startswith("bench.") and layer.get(a, 99) <= layer[b]
    ]
    assert not wrong, f"bench imports that are not downwards: {wrong}"


if __name__ == "__main__":
    for package in ("cellbox", "bench"):
        for cycle in cycles(graph(package)):
            known = " (known)" if any(cycle <= k for k in KNOWN_CYCLES) else ""
            print(f"{package}: cycle{known}: {' '.join(sorted(cycle))}")
    sys.exit(0)
