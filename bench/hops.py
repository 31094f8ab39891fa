"""Where one ``1+1`` round trip spends its time, per hop: ``python -m bench.hops``.

Runs ``N`` back-to-back evals on one session of a real server and reports, per eval: the
wall time, the CPU time of each process on the path (bench client, supervisor, session child:
``/proc/PID/stat`` and ``getrusage`` deltas), the pipe floors measured in the same run, and
with ``--strace`` the system calls each process makes per eval (a second pass under
``strace -c``, which slows it down: its times are not used). The difference between the wall
time and the CPU times on the path is time spent waiting for a process to be scheduled.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time

from bench.cellbox_driver import CellboxServer
from bench.core import median
from bench.floor import PipeFloor

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def _self_cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _run(server: CellboxServer, sid: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        server.eval(sid, "1+1")
        times.append(time.perf_counter() - t0)
    return times


def _syscalls(pid: int, run: callable) -> dict[str, int]:
    """System calls of ``pid`` (all threads) while ``run()`` runs, by name."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out.name, "-p", str(pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # let strace attach
        run()
        tracer.terminate()
        tracer.wait(10)
        counts = {}
        for line in out.read().splitlines():
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m:
                counts[m.group(2)] = int(m.group(1))
        return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--strace", action="store_true", help="count system calls per eval")
    args = parser.parse_args()
    n = args.n
    with PipeFloor(1) as one, PipeFloor(2) as two:
        floor1, floor2 = median(one.samples(2000)), median(two.samples(2000))
    with CellboxServer() as server:
        server.initialize()
        sid, child = server.create()
        _run(server, sid, 500)  # warm up
        before = (_self_cpu(), _cpu(server.pid), _cpu(child))
        t0 = time.perf_counter()
        times = _run(server, sid, n)
        wall = time.perf_counter() - t0
        after = (_self_cpu(), _cpu(server.pid), _cpu(child))
        (client_us, client_sys), (sup_us, sup_sys), (child_us, child_sys) = (
            ((a[0] - b[0]) / n * 1e6 + (a[1] - b[1]) / n * 1e6, (a[1] - b[1]) / n * 1e6)
            for a, b in zip(after, before)
        )
        print(f"{n} evals of 1+1 on one session, Python {os.sys.version.split()[0]}")
        print(f"  round trip: median {median(times) * 1e6:.0f} us, mean {wall / n * 1e6:.0f} us")
        print(f"  pipe floors: one hop {floor1 * 1e6:.1f} us, two hops {floor2 * 1e6:.1f} us "
              f"(round trip / two-hop floor: {median(times) / floor2:.1f}x)")
        print(f"  CPU per eval (of which in the kernel): bench client {client_us:.0f} ({client_sys:.0f}) us, "
              f"supervisor {sup_us:.0f} ({sup_sys:.0f}) us, child {child_us:.0f} ({child_sys:.0f}) us "
              f"(sum {client_us + sup_us + child_us:.0f} us)")
        print(f"  not on any CPU (scheduling, wake-ups): {wall / n * 1e6 - client_us - sup_us - child_us:.0f} us")
        if args.strace and shutil.which("strace"):
            for name, pid in (("supervisor", server.pid), ("child", child)):
                counts = _syscalls(pid, lambda: _run(server, sid, 1000))
                per = {k: v / 1000 for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v >= 100}
                print(f"  {name} system calls per eval: " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))


if __name__ == "__main__":
    main()
