"""The CI perf gate: ``python -m bench.gate``. Quick (well under a minute), no Jupyter needed,
and built not to flake on a noisy 2-core machine.

Every check is a ratio of two things measured in the same run, interleaved where they are
timings, so load that slows one slows the other: cellbox against a floor that needs none of
cellbox (raw pipes, a bare interpreter, the stdlib codec) or against another cellbox number.
Thresholds are generous, several times the values measured on the reference machine (see
``THRESHOLDS`` and bench/README.md), so only a gross regression fails. A check that fails is
measured again, up to ``--tries`` times, and fails the gate only if it failed every time. The
gate exits 0 when every check passed, 1 otherwise (2 on a usage error); a watchdog turns a
hang into a failure.

Run from the repository root: ``python -m bench.gate [--tries N] [--json FILE] [--only NAMES]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import floor, scenarios as sc
from bench.cellbox_driver import CellboxServer, has_zygote
from bench.core import host_info, median, per_op

pc = time.perf_counter
KILL_GRACE = 0.3
WATCHDOG_S = 240


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    op: str  # "<=" or ">="
    threshold: float
    reference: str  # the value on the reference machine, for the reader
    measure: Callable[[], tuple[float | None, str]]  # (value, detail); None: not applicable

    def passes(self, value: float) -> bool:
        return value <= self.threshold if self.op == "<=" else value >= self.threshold


# --- measurements -----------------------------------------------------------------------------


def _rt_vs_floor(code: str) -> tuple[float, str]:
    per, blocks = 200, 5
    f2: list[float] = []
    cb: list[float] = []
    with floor.PipeFloor(2) as two, CellboxServer() as srv:
        srv.initialize()
        sid, _ = srv.create()
        srv.eval(sid, "import asyncio")
        sc.timed_evals(srv, sid, code, 100)
        for _ in range(blocks):
            f2 += two.samples(per)
            cb += sc.timed_evals(srv, sid, code, per)
    a, b = median(cb), median(f2)
    return a / b, f"cellbox {a * 1e3:.3f} ms, two-hop floor {b * 1e3:.4f} ms (p50)"


def rt_one_plus_one() -> tuple[float, str]:
    return _rt_vs_floor(sc.ONE_PLUS_ONE)


def rt_await() -> tuple[float, str]:
    return _rt_vs_floor(sc.AWAIT_SLEEP)


def parallel_scaling() -> tuple[float, str]:
    seq, par = [], []
    with CellboxServer() as srv:
        srv.initialize()
        sids = [srv.create()[0] for _ in range(4)]
        sc.timed_evals(srv, sids[0], sc.ONE_PLUS_ONE, 100)
        for _ in range(4):
            seq.append(300 / sum(sc.timed_evals(srv, sids[0], sc.ONE_PLUS_ONE, 300)))
            par.append(sc._parallel_cellbox(srv, sids, 150))
    a, b = median(par), median(seq)
    return a / b, f"4 sessions {a:,.0f} evals/s, one session {b:,.0f} evals/s"


def interrupt_vs_rt() -> tuple[float, str]:
    code = "import time\n" + sc.GO + "time.sleep(10)"
    ints, rts = [], []
    with CellboxServer() as srv:
        srv.initialize()
        sid, _ = srv.create()
        sc.timed_evals(srv, sid, sc.ONE_PLUS_ONE, 50)
        for _ in range(8):
            dt, result = sc._interrupt_cellbox(srv, sid, code)
            if result["status"] != "interrupted":
                return float("inf"), f"the sleeping cell answered {result['status']}"
            ints.append(dt)
            rts += sc.timed_evals(srv, sid, sc.ONE_PLUS_ONE, 30)
    a, b = median(ints), median(rts)
    return a / b, f"interrupt {a * 1e3:.2f} ms, `1+1` round trip {b * 1e3:.3f} ms (p50)"


def kill_path() -> tuple[float, str]:
    code = "import time\n" + sc.GO + sc.INTERRUPT_CASES[3][3]
    times = []
    with CellboxServer("--kill-grace", str(KILL_GRACE)) as srv:
        srv.initialize()
        sid, _ = srv.create()
        for _ in range(2):
            srv.eval(sid, sc.ONE_PLUS_ONE)
            dt, result = sc._interrupt_cellbox(srv, sid, code)
            if result["status"] != "killed":
                return float("inf"), f"the cell swallowing KeyboardInterrupt answered {result['status']}"
            times.append(dt)
    a = median(times)
    return a / KILL_GRACE, f"kill path {a * 1e3:.0f} ms with --kill-grace {KILL_GRACE} s"


def cold_start() -> tuple[float, str]:
    starts, floors = [], []
    with CellboxServer(*sc.flags("--no-zygote", "--warm 0")) as srv:
        srv.initialize()
        for _ in range(4):
            starts += sc._starts(srv, 2)
            floors.append(floor.interpreter_start())
            floors.append(floor.interpreter_start())
    a, b = median(starts), median(floors)
    return a / b, f"cold session + first result {a * 1e3:.1f} ms, `python -c 'import asyncio, msgspec'` {b * 1e3:.1f} ms"


def zygote_start() -> tuple[float | None, str]:
    cold, warm = [], []
    with CellboxServer(*sc.flags("--no-zygote", "--warm 0")) as a_srv, \
            CellboxServer(*sc.flags("--warm 0")) as z_srv:
        a_srv.initialize()
        if not has_zygote(z_srv.initialize(), z_srv.stats()):
            return None, "zygote: not available"
        for _ in range(4):
            cold += sc._starts(a_srv, 2)
            warm += sc._starts(z_srv, 2)
    a, b = median(warm), median(cold)
    return a / b, f"zygote start {a * 1e3:.1f} ms, cold start {b * 1e3:.1f} ms"


def tla_latency() -> tuple[float, str]:
    from bench.inchild import executor_samples

    s = executor_samples(1500)
    a, b = median(s["cellbox:await asyncio.sleep(0)"]), median(s["minimal:await asyncio.sleep(0)"])
    return a / b, f"executor TLA cell {a:.1f} µs, minimal TLA loop {b:.1f} µs"


def codec() -> tuple[float, str]:
    from bench.inchild import codec_functions

    fns = codec_functions()
    a = median(per_op(fns["cellbox"], 100, 50))
    b = median(per_op(fns["stdlib"], 100, 50))
    return a / b, f"cellbox {a * 1e6:.2f} µs, stdlib json {b * 1e6:.2f} µs"


def output() -> tuple[float, str]:
    rates, pipe = [], []
    with CellboxServer() as srv:
        srv.initialize()
        sid, _ = srv.create(limits={"outputBytes": 4 * sc.OUTPUT_BYTES})
        for _ in range(3):
            rates.append(sc.output_rate_cellbox(srv, sid, sc.OUTPUT_CODE))
            pipe.append(sc.OUTPUT_BYTES / 1e6 / floor.pipe_bandwidth(sc.OUTPUT_BYTES))
    a, b = median(rates), median(pipe)
    return a / b, f"cellbox {a:.0f} MB/s, raw pipe {b:.0f} MB/s"


def idle_memory() -> tuple[float, str]:
    import subprocess

    one, _ = sc._one_idle()
    bare = subprocess.Popen([sys.executable, "-c", "import asyncio, msgspec, sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        b = sc.pss_kib(bare.pid) / 1024
    finally:
        bare.stdin.close()  # type: ignore[union-attr]
        bare.wait()
    return one / b, f"idle session {one:.1f} MiB, bare interpreter with asyncio+msgspec {b:.1f} MiB (PSS)"


# Thresholds: several times the reference values (2-core AMD EPYC, Python 3.11, measured while
# other jobs ran), so that only a gross regression fails.
CHECKS = [
    Check("rt", "`1+1` round trip p50 / two-hop raw pipe floor p50", "<=", 80, "8-25×", rt_one_plus_one),
    Check("rt-await", "`await asyncio.sleep(0)` round trip p50 / two-hop floor p50", "<=", 90, "11-28×", rt_await),
    Check("parallel", "4-session evals/s / one-session evals/s", ">=", 0.6, "1.4-2.3×", parallel_scaling),
    Check("interrupt", "cooperative interrupt p50 / `1+1` round trip p50", "<=", 25, "1.5-6×", interrupt_vs_rt),
    Check("kill", "kill path (swallowed KeyboardInterrupt) / --kill-grace", "<=", 1.6, "1.01-1.03×", kill_path),
    Check("cold-start", "cold session start to first result / bare interpreter start", "<=", 3, "1.0-1.1×", cold_start),
    Check("zygote", "zygote session start / cold session start", "<=", 0.6, "0.08-0.12×", zygote_start),
    Check("tla", "in-child TLA cell p50 / minimal TLA loop p50 (seed's TLA gate)", "<=", 10, "2.0-2.2×", tla_latency),
    Check("codec", "eval request decode+encode / stdlib json", "<=", 2, "0.14-0.25×", codec),
    Check("output", "10 MB output MB/s / raw pipe MB/s", ">=", 0.04, "0.24-0.35×", output),
    Check("memory", "idle session PSS / bare interpreter PSS", "<=", 1.6, "0.38-0.47× (1.2× without a zygote)", idle_memory),
]


def _watchdog(signum: int, frame: object) -> None:
    print(f"bench.gate: FAIL: the gate did not finish within {WATCHDOG_S} s (a hang?)", flush=True)
    sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gate", description="cellbox's CI perf gate (same-run ratios)")
    p.add_argument("--tries", type=int, default=3, help="measure a failing check up to N times (default 3)")
    p.add_argument("--only", default=None, help="comma-separated check names: " + ", ".join(c.name for c in CHECKS))
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    checks = CHECKS
    if args.only:
        names = {n.strip() for n in args.only.split(",")}
        checks = [c for c in CHECKS if c.name in names]
        if len(checks) != len(names):
            print(f"unknown check in {args.only!r}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGALRM, _watchdog)
    signal.alarm(WATCHDOG_S)
    host = host_info()
    print(f"bench.gate: Python {host['python']} on {host['host']} ({host['cpu']}, {host['cores']} cores), "
          f"load {' '.join(map(str, host['loadavg']))}", flush=True)
    t0 = pc()
    results, failed = [], []
    for check in checks:
        tries = []
        value, detail, ok = None, "", True
        for _ in range(max(1, args.tries)):
            try:
                value, detail = check.measure()
            except Exception as exc:  # a broken server is a failure of the gate, not a crash
                value, detail = None, f"error: {type(exc).__name__}: {exc}"
                ok = False
                tries.append(None)
                continue
            tries.append(value)
            ok = value is None or check.passes(value)
            if ok:
                break
        sym = "≤" if check.op == "<=" else "≥"
        shown = "n/a" if value is None else f"{value:.3g}×"
        status = "ok" if ok else "FAIL"
        print(f"  {status:4} {check.name:10} {shown:>9} (limit {sym} {check.threshold:g}×, ref {check.reference})"
              f"  {check.what}: {detail}" + (f" [tries: {len(tries)}]" if len(tries) > 1 else ""), flush=True)
        results.append({"name": check.name, "what": check.what, "value": value, "op": check.op,
                        "threshold": check.threshold, "ok": ok, "detail": detail, "tries": tries})
        if not ok:
            failed.append(check.name)
    signal.alarm(0)
    seconds = pc() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": host, "seconds": round(seconds, 1), "checks": results}, f, indent=2)
    print(f"bench.gate: took {seconds:.1f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    print(f"gate: {len(checks) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
