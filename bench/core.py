"""The benchmarks' core: what every other file of ``bench/`` shares, and nothing that runs.

Statistics (median, nearest-rank percentiles, ratios, ``Summary``), timing (``per_op``), the
result records (``Row``, ``Target``), the scenario registry (``Context``, ``scenario``,
``REGISTRY``), the host stamp (``host_info``) and the repository root.

Layers (``tests/unit/test_import_graph.py`` keeps them): this module imports only the
stdlib; the drivers and floors (``floor``, ``cellbox_driver``, ``jupyter_driver``,
``bench_codec``, ``bench_executor``) import only ``core``; the scenarios (``scenarios``,
``inchild``) import ``core`` and the drivers; the entry points (``runner``: ``python -m
bench``, ``gate``: ``python -m bench.gate``) import the layers below them. No file imports a
file of its own layer or of a layer above.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# --- statistics -------------------------------------------------------------------------------


def median(samples: Sequence[float]) -> float:
    """The median (mean of the two middle values for an even count). Raises on no samples."""
    if not samples:
        raise ValueError("median of no samples")
    s = sorted(samples)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) by the nearest-rank method: the smallest sample
    with at least ``q`` % of the samples at or below it. p99 of fewer than 100 samples is
    therefore the maximum, never an interpolation below what was observed."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    s = sorted(samples)
    rank = math.ceil(q / 100 * len(s))
    return s[max(rank, 1) - 1]


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass(frozen=True)
class Summary:
    """Median and tail of one side's samples. ``tail`` is the p99 when lower is better and
    the 1st percentile (the slowest 1 %) when higher is better."""

    n: int
    median: float
    tail: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float], higher_is_better: bool = False) -> Summary | None:
        if not samples:
            return None
        if higher_is_better:
            # the p1 of a rate, by nearest rank from the bottom
            tail = sorted(samples)[max(math.ceil(0.01 * len(samples)), 1) - 1]
        else:
            tail = p99(samples)
        return cls(len(samples), median(samples), tail, min(samples), max(samples))


# --- rows and targets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal for cellbox's number: ``op`` is ``"<="`` or ``">="``; ``stat`` picks the median
    or the tail."""

    op: str
    value: float
    stat: str = "median"

    def check(self, s: Summary | None) -> bool | None:
        if s is None:
            return None
        x = s.median if self.stat == "median" else s.tail
        return x <= self.value if self.op == "<=" else x >= self.value

    def text(self, unit: str, higher_is_better: bool) -> str:
        sym = "≤" if self.op == "<=" else "≥"
        which = "" if self.stat == "median" else (" p1" if higher_is_better else " p99")
        return f"{sym} {fmt(self.value)} {unit}{which}".replace(" ×", "×")


@dataclass
class Row:
    """One line of the table: raw samples of both sides (seconds are converted by the
    scenario into the row's ``unit``), the targets and notes."""

    key: str
    title: str
    unit: str
    cellbox: list[float] | None = None
    jupyter: list[float] | None = None
    higher_is_better: bool = False
    targets: list[Target] = field(default_factory=list)
    cellbox_note: str = ""  # shown instead of / next to a number, e.g. "zygote: not available"
    jupyter_note: str = ""  # e.g. "did not return within 5 s", "not run (--no-jupyter)"
    note: str = ""
    scenario: str = ""
    peer: bool = True  # False for floors and baselines, which have no Jupyter side

    def merge(self, other: Row) -> None:
        for side in ("cellbox", "jupyter"):
            mine, theirs = getattr(self, side), getattr(other, side)
            if theirs:
                setattr(self, side, (mine or []) + list(theirs))
        for attr in ("cellbox_note", "jupyter_note", "note"):
            if getattr(other, attr) and not getattr(self, attr):
                setattr(self, attr, getattr(other, attr))

    def summaries(self) -> tuple[Summary | None, Summary | None]:
        return (Summary.of(self.cellbox or [], self.higher_is_better),
                Summary.of(self.jupyter or [], self.higher_is_better))

    def met(self) -> bool | None:
        if not self.targets:
            return None
        cb, _ = self.summaries()
        results = [t.check(cb) for t in self.targets]
        if any(r is None for r in results):
            return None
        return all(results)


# --- registry ---------------------------------------------------------------------------------


@dataclass
class Context:
    """Options every scenario sees."""

    quick: bool = False
    jupyter: bool = True
    kill_grace: float = 0.5
    jupyter_wait: float = 5.0  # how long Jupyter gets to return from an uncooperative cell
    verbose: bool = True
    started: float = field(default_factory=time.perf_counter)
    shared: dict = field(default_factory=dict)  # values one scenario leaves for a later one

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[{time.perf_counter() - self.started:7.1f}s] {text}", file=sys.stderr, flush=True)


@dataclass
class Scenario:
    name: str
    title: str
    fn: Callable[[Context], list[Row]]


REGISTRY: dict[str, Scenario] = {}


def scenario(name: str, title: str) -> Callable[[Callable[[Context], list[Row]]], Callable[[Context], list[Row]]]:
    """Register ``fn(ctx) -> [Row]`` under ``name`` (run in registration order)."""

    def register(fn: Callable[[Context], list[Row]]) -> Callable[[Context], list[Row]]:
        REGISTRY[name] = Scenario(name, title, fn)
        return fn

    return register


# --- host and formatting ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def host_info() -> dict:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "versions": {name: _version(name) for name in
                     ("cellbox", "msgspec", "anyio", "ipykernel", "jupyter_client", "pyzmq")},
    }


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a == 0:
        return "0"
    return f"{x:.3g}"



# --- timing -----------------------------------------------------------------------------------


def per_op(fn: Callable[[], object], rounds: int, calls: int, ops: int = 1) -> list[float]:
    """Seconds per operation, one sample per round of ``calls`` calls (after a warm-up), as
    ``bench_codec.measure`` times them."""
    for _ in range(calls * 10):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter_ns() - t0) / (calls * ops) / 1e9)
    return out
