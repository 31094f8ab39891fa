"""The benchmark runner: runs the scenarios, checks their targets and writes the result files.

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
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

from bench.core import REGISTRY, ROOT, Context, Row, Summary, fmt, host_info, ratio

DEFAULT_OUT = ROOT / "bench" / "results"
INSTALL_HINT = "pip install -e '.[bench]'   (installs ipykernel and jupyter_client)"

# --- the time limit --------------------------------------------------------------------------


class ScenarioTimeout(Exception):
    """A scenario ran past its time limit (raised from SIGALRM into the main thread, which
    also interrupts blocking zmq and pipe reads)."""


def _on_alarm(signum: int, frame: object) -> None:
    raise ScenarioTimeout("the scenario ran past its time limit")


# --- formatting ------------------------------------------------------------------------------


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
    from bench import scenarios  # noqa: F401  (registers the scenarios, in their order)
    from bench import inchild  # noqa: F401  (registers "executor" and "codec" after the others)

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
