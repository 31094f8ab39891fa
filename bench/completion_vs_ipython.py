"""Completion quality and latency: cellbox's completer against IPython's, on one namespace.

Measures, for ~30 queries (names, attributes, dict keys, imports, keyword arguments, after
``await``, code defined in the same cell, strings), whether each engine offers the completion
a user wants, at which rank, how long it takes (median of warm runs), and whether it ran user
code (a property, ``__getattr__`` or ``__getitem__`` with a counter). Engines:

- ``cellbox``: ``cellbox.child.editor.completions`` with jedi (the default when installed),
  its real time budget (``JEDI_BUDGET``);
- ``own``: the same with jedi switched off (the fallback when jedi is not installed);
- ``ipython``: ``InteractiveShell.instance().Completer.completions`` (jedi plus IPython's own
  matchers), with the same namespace as ``user_ns``.

A completion counts as found when applying it (``code[:start] + text``) gives text that
starts with the wanted text, so ``data['alpha'`` and ``data['alpha`` both satisfy
``data['alpha``.

Run: ``pip install ipython jedi`` then ``python bench/completion_vs_ipython.py`` (not part of
the test suite). Prints the Python version, host and library versions with the table.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellbox.child import editor, jedi_bridge  # noqa: E402

RUNS = 5
SIDE_EFFECTS: list[str] = []


class Sneaky:
    """Attributes that run code when read."""

    plain = 1

    def __init__(self) -> None:
        self.field = {"inner": 1, "other": 2}

    @property
    def prop(self) -> int:
        SIDE_EFFECTS.append("property")
        return 1

    def __getattr__(self, name: str) -> Any:
        SIDE_EFFECTS.append(f"__getattr__ {name}")
        return 5

    def __getitem__(self, key: Any) -> Any:
        SIDE_EFFECTS.append(f"__getitem__ {key}")
        return {"deep": 1}

    def method(self, alpha: int, beta: int = 2, *, gamma: int = 3) -> None:
        """A method."""

    @classmethod
    def class_method(cls) -> None:
        pass

    def _private(self) -> None:
        pass


class Frame:
    """Columns as dynamic attributes advertised by ``__dir__``, and as keys advertised by
    IPython's ``_ipython_key_completions_`` (like pandas)."""

    def __init__(self) -> None:
        self._columns = {"column_a": [1], "column_b": [2]}

    def _ipython_key_completions_(self) -> list[str]:
        SIDE_EFFECTS.append("_ipython_key_completions_")
        return list(self._columns)

    def __getitem__(self, key: str) -> Any:
        SIDE_EFFECTS.append(f"Frame.__getitem__ {key}")
        return self._columns[key]

    def __dir__(self) -> list[str]:
        return [*object.__dir__(self), *self._columns]

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get("_columns", {}):
            SIDE_EFFECTS.append(f"Frame column {name}")
            return self._columns[name]
        raise AttributeError(name)


def func(key1: int, key2: int = 3, *, kw: int = 4) -> int:
    """Add things up."""
    return key1


def namespace() -> dict[str, Any]:
    return {
        "__builtins__": builtins,
        "__name__": "__main__",
        "asyncio": asyncio,
        "os": os,
        "m": math,
        "collections": collections,
        "sneaky": Sneaky(),
        "Sneaky": Sneaky,
        "frame": Frame(),
        "func": func,
        "data": {"alpha": 1, "alpine": 2, 42: "x"},
        "nested": {"outer": {"inner": 1}},
        "my_variable": 1,
        "ünïcode_var": 2,
    }


# (label, code, wanted: what applying the completion must produce at the start of the text)
QUERIES: list[tuple[str, str, str]] = [
    ("builtin name", "pri", "print"),
    ("namespace name", "my_v", "my_variable"),
    ("keyword", "whi", "while"),
    ("unicode name", "ünïc", "ünïcode_var"),
    ("method", "sneaky.me", "sneaky.method"),
    ("attribute, empty prefix", "sneaky.", "sneaky.method"),
    ("classmethod on class", "Sneaky.class_m", "Sneaky.class_method"),
    ("private attribute", "sneaky._pri", "sneaky._private"),
    ("module attribute", "os.path.jo", "os.path.join"),
    ("aliased module", "m.sq", "m.sqrt"),
    ("__dir__ attribute", "frame.colu", "frame.column_a"),
    ("dict key, double quote", 'data["al', 'data["alpha'),
    ("dict key, single quote", "data['al", "data['alpha"),
    ("dict key, no quote", "data[", "data['alpha"),
    ("dict key, int", "data[4", "data[42"),
    ("nested dict key", 'nested["outer"]["in', 'nested["outer"]["inner'),
    ("dict key of attribute", "sneaky.field['in", "sneaky.field['inner"),
    ("import", "import o", "import os"),
    ("import submodule", "import xml.d", "import xml.dom"),
    ("from-import name", "from os import pa", "from os import path"),
    ("from dotted module", "from os.pa", "from os.path"),
    ("from-import in parens", "from collections import (Ord", "from collections import (OrderedDict"),
    ("after await", "await asyncio.sl", "await asyncio.sleep"),
    ("after x = await", "x = await asyncio.sl", "x = await asyncio.sleep"),
    ("keyword argument", "func(ke", "func(key1="),
    ("keyword-only argument", "sneaky.method(1, ga", "sneaky.method(1, gamma="),
    ("call result attribute", "collections.Counter().most", "collections.Counter().most_common"),
    ("literal attribute", "'abc'.up", "'abc'.upper"),
    ("name defined in the cell", "xs = [1]\nxs.app", "xs = [1]\nxs.append"),
    ("inside a block", "if True:\n    os.pa", "if True:\n    os.path"),
    ("file path in a string", "open('/tm", "open('/tmp/"),
    ("function defined in the cell", "def g(alpha, beta):\n    pass\ng(al", "def g(alpha, beta):\n    pass\ng(alpha="),
    ("with-statement target", "with open('/dev/null') as fh:\n    fh.rea", "with open('/dev/null') as fh:\n    fh.read"),
    ("subscript of a call result", "sorted([3, 1])[0].bit_", "sorted([3, 1])[0].bit_length"),
    ("comprehension element", "[x for x in range(3)][0].bit_", "[x for x in range(3)][0].bit_length"),
    ("os.environ key (a Mapping)", "os.environ['PAT", "os.environ['PATH"),
    ("custom key protocol", "frame['col", "frame['column_a"),
    ("property's value (by design: not run)", "sneaky.prop.bit_", "sneaky.prop.bit_length"),
]


def cellbox_engine(use_jedi: bool) -> Callable[[dict[str, Any], str], list[tuple[int, str]]]:
    def run(ns: dict[str, Any], code: str) -> list[tuple[int, str]]:
        editor.USE_JEDI = use_jedi
        matches, start, _ = editor.completions(ns, code, len(code))
        return [(start, m) for m in matches]

    return run


def settle() -> None:
    """Wait until a jedi call that outlived its budget (warming jedi's caches) has finished,
    so the timed runs see a warm jedi, as IPython's do."""
    if jedi_bridge._busy.acquire(timeout=60):
        jedi_bridge._busy.release()


def ipython_engine() -> Callable[[dict[str, Any], str], list[tuple[int, str]]] | None:
    try:
        from IPython.core.completer import provisionalcompleter
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        return None
    shell = InteractiveShell.instance()

    def run(ns: dict[str, Any], code: str) -> list[tuple[int, str]]:
        shell.user_ns.clear()
        shell.user_ns.update(ns)
        with provisionalcompleter():
            return [(c.start, c.text) for c in shell.Completer.completions(code, len(code))]

    return run


def evaluate(run: Callable[[dict[str, Any], str], list[tuple[int, str]]], ns: dict[str, Any],
             code: str, wanted: str) -> dict[str, Any]:
    run(ns, code)  # warm-up (jedi's caches, module lists)
    settle()
    times = []
    SIDE_EFFECTS.clear()
    found: list[tuple[int, str]] = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        found = run(ns, code)
        times.append(time.perf_counter() - t0)
    ran_code = sorted(set(SIDE_EFFECTS))
    applied = [code[:start] + text for start, text in found]
    rank = next((i + 1 for i, a in enumerate(applied) if a.startswith(wanted)), None)
    return {"rank": rank, "count": len(found), "ms": statistics.median(times) * 1000, "ran_code": ran_code}


def cell(r: dict[str, Any]) -> str:
    hit = f"#{r['rank']}" if r["rank"] else "miss"
    return f"{hit:>5} {r['count']:>4} {r['ms']:7.2f}ms{' RAN CODE' if r['ran_code'] else ''}"


def effects(r: dict[str, Any]) -> str:
    return ", ".join(r["ran_code"])


def main() -> None:
    engines: dict[str, Any] = {"cellbox": cellbox_engine(True), "own": cellbox_engine(False)}
    ipy = ipython_engine()
    if ipy is not None:
        engines["ipython"] = ipy
    try:
        import jedi

        jedi_version = jedi.__version__
    except ImportError:
        jedi_version = "not installed (cellbox column = own)"
    try:
        import IPython

        ipython_version = IPython.__version__
    except ImportError:
        ipython_version = "not installed"
    print(f"Python {platform.python_version()} on {platform.platform()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs); jedi {jedi_version}; IPython {ipython_version}")
    print("cell: rank of the wanted completion (or miss), number of matches, median time\n")
    header = f"{'query':40} " + " ".join(f"{name:>24}" for name in engines) + "  verdict"
    print(header)
    print("-" * len(header))
    tally: collections.Counter[str] = collections.Counter()
    per_engine: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    for label, code, wanted in QUERIES:
        ns = namespace()
        results = {name: evaluate(run, ns, code, wanted) for name, run in engines.items()}
        for name, r in results.items():
            per_engine[name].append(r)
        verdict = ""
        if "ipython" in results:
            ours, theirs = results["cellbox"]["rank"], results["ipython"]["rank"]
            if ours and not theirs:
                verdict = "cellbox better"
            elif theirs and not ours:
                verdict = "cellbox worse"
            elif ours and theirs and ours != theirs:
                verdict = "cellbox ranks higher" if ours < theirs else "cellbox ranks lower"
            elif ours:
                verdict = "same"
            else:
                verdict = "both miss"
            if results["ipython"]["ran_code"] and not results["cellbox"]["ran_code"]:
                verdict += f"; IPython ran user code ({effects(results['ipython'])})"
            tally[verdict.split(";")[0]] += 1
        print(f"{label:40} " + " ".join(f"{cell(r):>24}" for r in results.values()) + f"  {verdict}")
    print()
    for name, rs in per_engine.items():
        found = sum(1 for r in rs if r["rank"])
        top = sum(1 for r in rs if r["rank"] == 1)
        ran = sum(1 for r in rs if r["ran_code"])
        ms = statistics.median(r["ms"] for r in rs)
        print(f"{name:8} found {found}/{len(rs)} (first: {top}), median {ms:.2f} ms, "
              f"max {max(r['ms'] for r in rs):.2f} ms, ran user code in {ran} queries")
    if tally:
        print("verdicts (cellbox vs ipython): " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())))


if __name__ == "__main__":
    main()
