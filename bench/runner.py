"""The benchmark runner: scenario registry, sample statistics, targets and the result files.

Every scenario measures cellbox and, in the same run, its peer (Jupyter: ipykernel driven by
jupyter_client) and returns ``Row``s of raw samples. The runner pools the samples of repeated
runs (``--repeat``), reduces them to a median and a tail (p99 for times; for rates, where
higher is better, the 1st percentile, i.e. the slow tail), computes the ratio cellbox/Jupyter
of the medians, checks each row's targets against cellbox's numbers and writes
``latest.md`` + ``latest.json`` stamped with the Python version, host, CPU, core count, date
and load average.

Run: ``python -m bench [--quick] [--only SCENARIO[,..]] [--no-jupyter] [--repeat N] [--out DIR]``.
Nothing is installed by the runner: without jupyter_client/ipykernel it says how to get them
and measures cellbox alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
INSTALL_HINT = "pip install -e '.[bench]'   (installs ipykernel and jupyter_client)"

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


class ScenarioTimeout(Exception):
    """A scenario ran past its time limit (raised from SIGALRM into the main thread, which
    also interrupts blocking zmq and pipe reads)."""


def _on_alarm(signum: int, frame: object) -> None:
    raise ScenarioTimeout("the scenario ran past its time limit")


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


def _cell(s: Summary | None, unit: str, note: str, stat: str) -> str:
    if s is None:
        return note or "—"
    value = s.median if stat == "median" else s.tail
    return f"{fmt(value)} {unit}".replace(" ×", "×")


def _row_ratio(row: Row, cb: Summary | None, jp: Summary | None) -> float | None:
    """cellbox / Jupyter of the medians; none for rows that are ratios themselves."""
    if row.unit == "×":
        return None
    return ratio(cb.median if cb else None, jp.median if jp else None)


def markdown(rows: Iterable[Row], meta: dict) -> str:
    rows = list(rows)
    h = meta["host"]
    lines = [
        "# cellbox benchmarks",
        "",
        f"Python {h['python']} ({h['implementation']}) on `{h['host']}`: {h['cpu']}, {h['cores']} cores, "
        f"{h['platform']}; {h['date']}; load average {' '.join(map(str, h['loadavg']))} at the start, "
        f"{' '.join(map(str, meta.get('loadavg_end', [])))} at the end; run took {meta.get('seconds', 0):.0f} s.",
        "",
        f"Command: `{meta['command']}`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in h["versions"].items() if v) + ".",
        "",
        "Ratio = cellbox median / Jupyter median (below 1 is better for times and memory, above 1 "
        "for rates). For rates the \"p99\" columns show the slow tail (1st percentile).",
        "",
        "| scenario | cellbox median | cellbox p99 | Jupyter median | Jupyter p99 | ratio | target | met? |",
        "|---|---:|---:|---:|---:|---:|---|:-:|",
    ]
    for row in rows:
        cb, jp = row.summaries()
        r = _row_ratio(row, cb, jp)
        target = ", ".join(t.text(row.unit, row.higher_is_better) for t in row.targets) or "—"
        met = {True: "yes", False: "**no**", None: "—"}[row.met()]
        title = row.title + (f" ({row.cellbox_note})" if row.cellbox_note and cb else "")
        lines.append(
            f"| {title} | {_cell(cb, row.unit, row.cellbox_note, 'median')} | "
            f"{_cell(cb, row.unit, '', 'tail') if cb else '—'} | "
            f"{_cell(jp, row.unit, row.jupyter_note, 'median')} | "
            f"{_cell(jp, row.unit, '', 'tail') if jp else '—'} | "
            f"{fmt(r) + '×' if r is not None else '—'} | {target} | {met} |"
        )
    if meta.get("failures"):
        lines += ["", "Scenarios that failed (no rows): " + "; ".join(meta["failures"])]
    notes = [(row.title, row.note) for row in rows if row.note]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- **{title}**: {note}" for title, note in notes]
    return "\n".join(lines) + "\n"


def to_json(rows: Iterable[Row], meta: dict) -> dict:
    out = []
    for row in rows:
        cb, jp = row.summaries()
        out.append({
            "key": row.key,
            "scenario": row.scenario,
            "title": row.title,
            "unit": row.unit,
            "higherIsBetter": row.higher_is_better,
            "cellbox": cb.__dict__ if cb else None,
            "jupyter": jp.__dict__ if jp else None,
            "ratio": _row_ratio(row, cb, jp),
            "targets": [{"op": t.op, "value": t.value, "stat": t.stat} for t in row.targets],
            "met": row.met(),
            "cellboxNote": row.cellbox_note or None,
            "jupyterNote": row.jupyter_note or None,
            "note": row.note or None,
        })
    return {**meta, "rows": out}


# --- main -------------------------------------------------------------------------------------


def jupyter_missing() -> str | None:
    """None if the Jupyter peer can run here, else what is missing."""
    missing = []
    for module in ("jupyter_client", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return ", ".join(missing) or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (about a minute)")
    p.add_argument("--only", default=None, help="comma-separated scenario names (see --list)")
    p.add_argument("--no-jupyter", action="store_true", help="measure cellbox only")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run each scenario N times, pooling samples")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="where latest.md/json go")
    p.add_argument("--kill-grace", type=float, default=0.5, metavar="S",
                   help="cellbox --kill-grace for the interrupt scenario (default 0.5 s)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench import scenarios  # noqa: F401  (registers the scenarios)

    if args.list:
        for s in REGISTRY.values():
            print(f"{s.name:12} {s.title}")
        return 0
    names = list(REGISTRY)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            print(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
            return 2
    if args.repeat < 1:
        print("--repeat must be >= 1", file=sys.stderr)
        return 2
    ctx = Context(quick=args.quick, jupyter=not args.no_jupyter, kill_grace=args.kill_grace,
                  verbose=not args.quiet)
    if ctx.jupyter and (missing := jupyter_missing()):
        print(f"bench: the Jupyter peer is not installed ({missing} missing): {INSTALL_HINT}\n"
              f"bench: measuring cellbox only (as with --no-jupyter)", file=sys.stderr)
        ctx.jupyter = False

    meta = {"host": host_info(), "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick, "jupyter": ctx.jupyter, "repeat": args.repeat,
            "killGrace": args.kill_grace}
    meta["command"] = meta["command"].strip()
    t0 = time.perf_counter()
    rows: dict[str, Row] = {}
    failures: list[str] = []
    limit = 150 if args.quick else 400
    signal.signal(signal.SIGALRM, _on_alarm)
    for name in names:
        sc = REGISTRY[name]
        for i in range(args.repeat):
            ctx.log(f"{name}: {sc.title}" + (f" (run {i + 1}/{args.repeat})" if args.repeat > 1 else ""))
            signal.alarm(limit)
            try:
                produced = sc.fn(ctx)
            except Exception as exc:  # one broken scenario must not lose the others' results
                signal.alarm(0)
                traceback.print_exc()
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                ctx.log(f"{name} FAILED: {type(exc).__name__}: {exc}")
                continue
            finally:
                signal.alarm(0)
            for row in produced:
                row.scenario = name
                if row.peer and not ctx.jupyter and not row.jupyter and not row.jupyter_note:
                    row.jupyter_note = "not run"
                if row.key in rows:
                    rows[row.key].merge(row)
                else:
                    rows[row.key] = row
    meta["failures"] = failures
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = markdown(rows.values(), meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text)
    (args.out / "latest.json").write_text(json.dumps(to_json(rows.values(), meta), indent=2) + "\n")
    print(text)
    ctx.log(f"wrote {args.out / 'latest.md'} and latest.json")
    if failures:
        print("bench: scenarios that failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0
