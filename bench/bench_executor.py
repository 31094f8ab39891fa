"""In-child cost of running a cell with ``cellbox.child.executor.Executor`` (no process, no
channel, no supervisor: only what the child itself spends per cell).

Measures, in microseconds per cell (median and p99 over many cells, after a warm-up):

1. a trivial cell, ``1+1`` (target < 50 us): the synchronous fast path, timed around one
   ``Executor.start()`` call made from a task on the running session loop (``on_done`` has
   been called when it returns): namespace checks, ``linecache`` registration, the compile
   cache (hit, code objects renamed to the new ``<cell N>``), analysis, exec/eval, the value's
   repr and MIME bundle, and the ``Done`` message;
2. an awaiting cell, ``await asyncio.sleep(0)`` (target < 150 us): from ``start()`` to
   ``on_done``, which includes creating the cell's Task in the session context and the loop
   iterations it takes to finish;
3. for reference, the same trivial cell with the compile cache disabled (``ast_cache_size=0``):
   the cost of parse + compile on every cell.

Run: ``python bench/bench_executor.py [--cells N]`` (not part of the test suite). Prints the
Python version and host with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellbox.child.executor import Executor  # noqa: E402
from cellbox.protocol.channel import Done  # noqa: E402


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sync_cells(ex: Executor, code: str, n: int, first: int) -> list[float]:
    out: list[float] = []
    done: list[Done] = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        ex.start(code, execution_count=first + i, on_done=done.append)
        out.append((time.perf_counter_ns() - t0) / 1000)
    assert len(done) == n and all(d.error is None for d in done), done[-1]
    return out


async def _async_cells(ex: Executor, code: str, n: int, first: int) -> list[float]:
    loop = asyncio.get_running_loop()
    out: list[float] = []
    for i in range(n):
        future: asyncio.Future[int] = loop.create_future()

        def on_done(d: Done, future: asyncio.Future[int] = future) -> None:
            future.set_result(time.perf_counter_ns())
            assert d.error is None, d.error

        t0 = time.perf_counter_ns()
        ex.start(code, execution_count=first + i, on_done=on_done)
        t1 = await future
        out.append((t1 - t0) / 1000)
    return out


def _measure(kind: str, code: str, n: int, **kwargs: object) -> list[float]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ex = Executor(emit_stream=lambda name, text: None, emit_display=lambda d: None, **kwargs)
    ex.install()
    try:
        if kind == "async":
            loop.run_until_complete(ex.run("import asyncio"))
            run = _async_cells
        else:
            run = _sync_cells
        loop.run_until_complete(run(ex, code, max(200, n // 10), 1))  # warm-up
        return loop.run_until_complete(run(ex, code, n, 10_000_000))
    finally:
        ex.uninstall()
        loop.close()
        asyncio.set_event_loop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=20_000, help="timed cells per case")
    args = parser.parse_args()
    cases = [
        ("1+1 (sync fast path)", "sync", "1+1", {}, 50),
        ("await asyncio.sleep(0)", "async", "await asyncio.sleep(0)", {}, 150),
        ("1+1, compile cache off", "sync", "1+1", {"ast_cache_size": 0}, None),
    ]
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"host {platform.node()}")
    print(f"{'cell':<28} {'median us':>10} {'p99 us':>10} {'target':>8}")
    for name, kind, code, kwargs, target in cases:
        samples = _measure(kind, code, args.cells, **kwargs)
        med = statistics.median(samples)
        p99 = _percentile(samples, 0.99)
        verdict = "" if target is None else (f"< {target}" + (" ok" if med < target else " MISS"))
        print(f"{name:<28} {med:>10.1f} {p99:>10.1f} {verdict:>8}")


if __name__ == "__main__":
    main()
