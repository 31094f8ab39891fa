"""The scenarios, in the order they run. Each measures cellbox (a real ``cellbox serve`` over
pipes, ``cellbox_driver``) and Jupyter (ipykernel through jupyter_client, ``jupyter_driver``)
in the same run, and returns table rows of raw samples (see ``core.Row``).

1. ``start``: ``session/create`` + the first ``1+1`` result (cold: a fresh interpreter; with
   the zygote: a forked child; the server's default, zygote plus warm pool), against Jupyter's
   kernel start + ``wait_for_ready`` + the first ``1+1``;
2. ``roundtrip``: one eval from the client to the child and back (``1+1``,
   ``await asyncio.sleep(0)``), interleaved with the raw pipe floors (``floor.py``);
3. ``throughput``: back-to-back evals on one session, and on 4 sessions at once;
4. ``interrupt``: interrupt sent -> eval answered, for ``time.sleep``, a Python busy loop, a C
   loop and a cell that swallows ``KeyboardInterrupt`` (cellbox's kill path; Jupyter never
   returns from the last two);
5. ``memory``: PSS (``/proc/PID/smaps_rollup``) of one idle session and of 100;
6. ``output``: 10 MB printed by a cell, MB/s reaching the client;
7. ``executor`` and 8. ``codec``: in-process costs without IPC (``inchild.py``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from bench import floor
from bench.cellbox_driver import CellboxServer, has_zygote, serve_help
from bench.core import Context, Row, Target, median, scenario

pc = time.perf_counter
MS = 1000.0
MIB = 1024.0  # KiB per MiB
ONE_PLUS_ONE = "1+1"
AWAIT_SLEEP = "await asyncio.sleep(0)"


def _ms(samples: list[float]) -> list[float]:
    return [s * MS for s in samples]


def flags(*wanted: str) -> list[str]:
    """The server flags among ``wanted`` (e.g. ``"--no-zygote"``, ``"--warm 0"``) that this
    build of ``cellbox serve`` knows; unknown ones are left out."""
    text = serve_help()
    out: list[str] = []
    for flag in wanted:
        parts = flag.split()
        if f"{parts[0]} " in text or f"{parts[0]}\n" in text or f"{parts[0]}," in text:
            out += parts
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB (shared pages divided among their users)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc's ppid links)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def timed_evals(srv: CellboxServer, sid: str, code: str, n: int) -> list[float]:
    send, wait = srv.send_eval, srv.wait
    out = []
    for _ in range(n):
        t0 = pc()
        reply = wait(send(sid, code))
        out.append(pc() - t0)
        if reply["result"]["status"] != "ok":
            raise RuntimeError(f"{code!r}: {reply['result']}")
    return out


def timed_jupyter(kernel, code: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = pc()
        content = kernel.execute(code)
        out.append(pc() - t0)
        if content["status"] != "ok":
            raise RuntimeError(f"{code!r}: {content}")
    return out


def jupyter_kernel():
    from bench.jupyter_driver import start_kernel

    return start_kernel()


# --- 1. session start ------------------------------------------------------------------------


def _starts(srv: CellboxServer, n: int, pause: float = 0.0, **params: Any) -> list[float]:
    """Create a session (with ``params``) and get the first ``1+1`` back, ``n`` times
    (closing each after)."""
    sid, _ = srv.create(**params)
    srv.eval(sid, ONE_PLUS_ONE)
    srv.close_session(sid)  # warm-up: the server's own lazy imports are not a session's cost
    out = []
    for _ in range(n):
        time.sleep(pause)
        t0 = pc()
        sid, _ = srv.create(**params)
        srv.eval(sid, ONE_PLUS_ONE)
        out.append(pc() - t0)
        srv.close_session(sid)
    return out


def _server_start() -> float:
    """Seconds from spawning ``cellbox serve`` to reading its ``initialize`` reply."""
    t0 = pc()
    srv = CellboxServer()
    try:
        srv.initialize()
        return pc() - t0
    finally:
        srv.close()


@scenario("start", "session start to first result: cold, with the zygote, server default")
def start(ctx: Context) -> list[Row]:
    n, nj = ctx.n(20, 6), ctx.n(6, 2)
    rows = []
    with CellboxServer(*flags("--no-zygote", "--warm 0")) as srv:
        cold_zygote = has_zygote(srv.initialize(), srv.stats())
        cold, bare = [], []
        for _ in range(4):  # interleaved with the interpreter-start floor
            cold += _starts(srv, n // 4)
            bare += [floor.interpreter_start() for _ in range(n // 4)]
    row = Row("start.cold", "session start → first `1+1` (cold: fresh interpreter)", "ms",
              _ms(cold), targets=[Target("<=", 80)],
              note="cellbox: `session/create` + first eval in a running server; Jupyter: "
                   "`start_kernel` + `wait_for_ready` + first `execute` (a new kernel process).")
    if cold_zygote:
        row.note += " The server reported a zygote although --no-zygote was asked for."
    if ctx.jupyter:
        from bench.jupyter_driver import JupyterKernel

        samples: list[float] = []
        for _ in range(nj * 2):
            t0 = pc()
            k = JupyterKernel().start().connect(settle=False)
            try:
                content = k.execute(ONE_PLUS_ONE, timeout=10)
            except TimeoutError:  # its IOPub messages went out before the subscription was live
                continue
            finally:
                k.shutdown()
            samples.append(pc() - t0)
            assert content["status"] == "ok"
            if len(samples) == nj:
                break
        row.jupyter = _ms(samples)
        ctx.shared["jupyter_start_ms"] = median(row.jupyter)
    rows.append(row)

    strict: list[float] = []
    with CellboxServer(*flags("--warm 0")) as srv:
        zygote = has_zygote(srv.initialize(), srv.stats())
        warm = _starts(srv, n)
        if (srv.capabilities.get("cellbox", {}).get("isolation") or {}).get("strict"):
            strict = _starts(srv, n, isolation="strict")
    zrow = Row("start.zygote", "session start → first `1+1` (warm zygote, no warm pool)", "ms",
               _ms(warm), targets=[Target("<=", 4)])
    if not zygote:
        zrow.cellbox_note = "zygote: not available"
        zrow.note = "This server build has no zygote: children start fresh, as in the cold row."
    if ctx.jupyter:
        zrow.jupyter = rows[0].jupyter
        zrow.jupyter_note = "(same kernel start)"
    rows.append(zrow)
    if strict:
        rows.append(Row("start.strict", "session start → first `1+1` (strict isolation, zygote, no warm pool)",
                        "ms", _ms(strict), targets=[Target("<=", 10)], peer=False,
                        note="User, PID, mount and network namespaces, Landlock, seccomp, cgroups: "
                             "all set up in the zygote's fork."))
        rows.append(Row("start.strict/zygote", "strict session start / process session start (medians, same server)",
                        "×", [median(strict) / median(warm)], peer=False))

    rows.insert(1, Row("floor.python", "floor: `python -c 'import asyncio, msgspec'`, start to exit", "ms",
                    _ms(bare), note="What a fresh child must do at least before it can answer; "
                                    "measured interleaved with the cold starts."))
    served, bare2 = [], []
    for _ in range(n // 2):  # interleaved with the floor again
        served.append(_server_start())
        bare2.append(floor.interpreter_start())
    rows.append(Row("start.server", "server start → `initialize` reply", "ms", _ms(served),
                    note="What an editor or `Sandbox()` pays at every start: spawn `cellbox serve`, "
                         "send `initialize`, read the reply."))
    rows.append(Row("start.server/floor", "server start → `initialize` / interpreter floor (medians, same run)",
                    "×", [median(served) / median(bare2)], targets=[Target("<=", 1.3)]))
    if "--warm" in serve_help():
        with CellboxServer() as srv:
            default_zygote = has_zygote(srv.initialize(), srv.stats())
            pooled = _starts(srv, n, pause=0.1)
        rows.append(Row(
            "start.default", "session start → first `1+1` (server default: zygote + warm pool)", "ms",
            _ms(pooled), targets=[Target("<=", 5)], jupyter=rows[0].jupyter,
            cellbox_note="" if default_zygote else "zygote: not available",
            note="Sessions created 100 ms apart, so the warm pool has refilled: the interactive "
                 "case. A burst of creates drains the pool and falls back to forks (see memory)."))
    return rows


# --- 2. round trips --------------------------------------------------------------------------


@scenario("roundtrip", "eval round trip (1+1, await asyncio.sleep(0)) against the raw pipe floor")
def roundtrip(ctx: Context) -> list[Row]:
    blocks, per = ctx.n(8, 3), ctx.n(400, 200)
    f1: list[float] = []
    f2: list[float] = []
    cb: list[float] = []
    cba: list[float] = []
    with floor.PipeFloor(1) as one, floor.PipeFloor(2) as two, CellboxServer() as srv:
        srv.initialize()
        sid, _ = srv.create()
        srv.eval(sid, "import asyncio")
        timed_evals(srv, sid, ONE_PLUS_ONE, 200)
        timed_evals(srv, sid, AWAIT_SLEEP, 200)
        for _ in range(blocks):  # interleaved, so every series sees the same load
            f1 += one.samples(per)
            f2 += two.samples(per)
            cb += timed_evals(srv, sid, ONE_PLUS_ONE, per)
            cba += timed_evals(srv, sid, AWAIT_SLEEP, per)
    j, ja = None, None
    if ctx.jupyter:
        nj = ctx.n(600, 150)
        with jupyter_kernel() as k:
            k.execute("import asyncio")
            timed_jupyter(k, ONE_PLUS_ONE, 30)
            j = _ms(timed_jupyter(k, ONE_PLUS_ONE, nj))
            ja = _ms(timed_jupyter(k, AWAIT_SLEEP, nj))
    floor2 = median(f2) * MS
    ctx.shared["floor2_ms"] = floor2
    rt = Row("rt.1+1", "`1+1` round trip", "ms", _ms(cb), j,
             note="Jupyter: `execute` until its `execute_reply` and IOPub `idle` (all output in).")
    ratio_row = Row("rt.1+1/floor", "`1+1` round trip / two-hop pipe floor (medians, same run)", "×",
                    [median(cb) * MS / floor2], [median(j) / floor2] if j else None,
                    targets=[Target("<=", 3)])
    rows = [
        Row("floor.1hop", "raw pipe ping-pong, one hop (floor)", "ms", _ms(f1), peer=False),
        Row("floor.2hop", "raw pipe ping-pong, two hops (floor)", "ms", _ms(f2), peer=False),
        rt,
        ratio_row,
    ]
    if j:
        rows.append(Row("rt.speedup", "Jupyter `1+1` round trip / cellbox's (medians, same run)", "×",
                        [median(j) / (median(cb) * MS)], higher_is_better=True, peer=False,
                        targets=[Target(">=", 25)]))
    rows += [
        Row("rt.await", "`await asyncio.sleep(0)` round trip", "ms", _ms(cba), ja),
        Row("rt.await/1+1", "`await asyncio.sleep(0)` round trip / `1+1` round trip (medians)", "×",
            [median(cba) / median(cb)], peer=False, targets=[Target("<=", 1.3)]),
    ]
    return rows


# --- 3. throughput ---------------------------------------------------------------------------


def _parallel_cellbox(srv: CellboxServer, sids: list[str], n: int) -> float:
    """Evals/s with one eval in flight per session, ``n`` per session."""
    left = {sid: n for sid in sids}
    pending: dict[int, str] = {}
    t0 = pc()
    for sid in sids:
        pending[srv.send_eval(sid, ONE_PLUS_ONE)] = sid
        left[sid] -= 1
    while pending:
        reply = srv.wait_any(set(pending))
        sid = pending.pop(reply["id"])
        if reply["result"]["status"] != "ok":
            raise RuntimeError(reply)
        if left[sid]:
            left[sid] -= 1
            pending[srv.send_eval(sid, ONE_PLUS_ONE)] = sid
    return n * len(sids) / (pc() - t0)


def _parallel_jupyter(kernels: list, n: int) -> float:
    barrier = threading.Barrier(len(kernels) + 1)
    errors: list[BaseException] = []

    def work(k) -> None:
        barrier.wait()
        try:
            timed_jupyter(k, ONE_PLUS_ONE, n)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in kernels]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = pc()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return n * len(kernels) / (pc() - t0)


@scenario("throughput", "sequential evals/s on one session, and over 4 sessions in parallel")
def throughput(ctx: Context) -> list[Row]:
    batches, n, jbatches, nj = ctx.n(5, 3), ctx.n(1000, 300), ctx.n(3, 2), ctx.n(200, 60)
    seq, par = [], []
    with CellboxServer() as srv:
        srv.initialize()
        sids = [srv.create()[0] for _ in range(4)]
        timed_evals(srv, sids[0], ONE_PLUS_ONE, 100)
        for _ in range(batches):
            seq.append(n / sum(timed_evals(srv, sids[0], ONE_PLUS_ONE, n)))
            par.append(_parallel_cellbox(srv, sids, n // 2))
    jseq, jpar = None, None
    if ctx.jupyter:
        kernels = []
        try:
            for _ in range(4):
                kernels.append(jupyter_kernel())
            timed_jupyter(kernels[0], ONE_PLUS_ONE, 20)
            jseq, jpar = [], []
            for _ in range(jbatches):
                jseq.append(nj / sum(timed_jupyter(kernels[0], ONE_PLUS_ONE, nj)))
                jpar.append(_parallel_jupyter(kernels, nj // 2))
        finally:
            for k in kernels:
                k.shutdown()
    note = ("One eval in flight per session (send, wait for the reply, send the next); the p99 "
            "columns show the slowest batch. 4 sessions: one cellbox server, one client thread; "
            "Jupyter: 4 kernels, one client thread each.")
    return [
        Row("tp.seq", "`1+1` evals/s, one session, back to back", "evals/s", seq, jseq,
            higher_is_better=True, targets=[Target(">=", 5000)], note=note),
        Row("tp.par4", "`1+1` evals/s, 4 sessions in parallel", "evals/s", par, jpar,
            higher_is_better=True, targets=[Target(">=", 8000)]),
    ]


# --- 4. interrupts ---------------------------------------------------------------------------

GO = "print('go', flush=True)\n"
# (key, title, setup, body, cooperative): the cell runs setup, prints 'go', then body. The
# interrupt is sent SETTLE s after 'go' arrived, so it lands in body even when the child was
# preempted right after its write (2 cores, 3 busy processes); the time is counted from the send.
SETTLE = 0.02
INTERRUPT_CASES = [
    ("sleep", "`time.sleep(10)`", "import time\n", "time.sleep(10)", True),
    ("busy", "Python busy loop", "", "while True:\n    pass", True),
    ("cloop", "C loop (`any(itertools.repeat(0))`)", "import itertools\n",
     "any(itertools.repeat(0))", False),
    ("swallow", "swallowed `KeyboardInterrupt`", "import time\n",
     "while True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass", False),
]


def _interrupt_cellbox(srv: CellboxServer, sid: str, code: str) -> tuple[float, dict]:
    """Seconds from ``session/interrupt`` to the eval's answer, once the cell printed 'go'."""
    rid = srv.send_eval(sid, code)
    while True:
        msg = srv.read()
        if msg.get("id") == rid:
            raise RuntimeError(f"the cell ended before the interrupt: {msg}")
        if msg.get("method") == "session/output" and "go" in msg["params"]["text"]:
            break
    time.sleep(SETTLE)
    t0 = pc()
    iid = srv.send("session/interrupt", {"session": sid})
    reply = srv.wait(rid)
    dt = pc() - t0
    srv.wait(iid)
    return dt, reply["result"]


def _interrupt_jupyter(k, code: str, wait: float) -> float | None:
    """Like ``_interrupt_cellbox``; None if the cell did not return within ``wait`` s.

    ipykernel sends output from a background thread, which never gets the GIL back from a C
    loop: the 'go' printed just before one never arrives. So a cell counts as started at its
    'go', or 1 s after its ``busy`` status if no 'go' comes."""
    from queue import Empty

    get = k.kc.iopub_channel.get_msg
    for _ in range(5):
        mid = k.send(code)
        sent, busy_at, started = pc(), None, False
        while True:
            try:
                msg = get(timeout=0.2)
            except Empty:
                if busy_at is not None and pc() - busy_at > 1.0:
                    started = True
                    break
                if pc() - sent > 30:
                    raise RuntimeError("Jupyter did not start the cell within 30 s") from None
                continue
            if msg["parent_header"].get("msg_id") != mid:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                started = True
                break
            if kind == "status" and msg["content"]["execution_state"] == "busy":
                busy_at = pc()
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break  # ended without running: aborted after the previous error; send again
        if started:
            break
        k.finish_reply(mid)
    else:
        raise RuntimeError("Jupyter kept aborting the cell")
    time.sleep(SETTLE)
    t0 = pc()
    k.interrupt()
    content = k.finish(mid, timeout=wait)
    if content is None:
        return None
    dt = pc() - t0
    _settle(k)
    return dt


def _settle(k) -> None:
    """Run ``1+1`` until the kernel runs it (ipykernel aborts requests right after an error)."""
    for _ in range(10):
        if k.execute(ONE_PLUS_ONE)["status"] == "ok":
            return
    raise RuntimeError("the Jupyter kernel keeps aborting requests")


@scenario("interrupt", "interrupt latency: cooperative code, and the kill path for uncooperative code")
def interrupt(ctx: Context) -> list[Row]:
    n, nk, nj = ctx.n(20, 6), ctx.n(5, 2), ctx.n(15, 4)
    grace = ctx.kill_grace
    results: dict[str, list[float]] = {}
    statuses: dict[str, set[str]] = {}
    with CellboxServer("--kill-grace", str(grace)) as srv:
        srv.initialize()
        sid, _ = srv.create()
        srv.eval(sid, "1+1")
        for key, _, setup, body, coop in INTERRUPT_CASES:
            code = setup + GO + body
            results[key], statuses[key] = [], set()
            for _ in range(n if coop else nk):
                dt, result = _interrupt_cellbox(srv, sid, code)
                results[key].append(dt)
                statuses[key].add(f"{result['status']}" + (f"/{result['cause']}" if result.get("cause") else ""))
                if not coop:
                    srv.eval(sid, "1+1")  # the replacement child is ready before the next sample
    jres: dict[str, list[float] | None] = {}
    jnotes: dict[str, str] = {}
    if ctx.jupyter:
        k = jupyter_kernel()
        try:
            for key, _, setup, body, coop in INTERRUPT_CASES:
                code = setup + GO + body
                samples = []
                for _ in range(nj if coop else 1):
                    dt = _interrupt_jupyter(k, code, ctx.jupyter_wait)
                    if dt is None:
                        jnotes[key] = f"did not return within {ctx.jupyter_wait:g} s"
                        k.shutdown()  # the kernel is stuck: replace it
                        k = jupyter_kernel()
                        break
                    samples.append(dt)
                jres[key] = _ms(samples) if samples else None
        finally:
            k.shutdown()
    rows = []
    for key, title, _, _, coop in INTERRUPT_CASES:
        if coop:
            target = [Target("<=", 2)]
            label = f"interrupt → answer: {title}"
        else:
            target = [Target("<=", grace * MS + 50)]
            label = f"interrupt → answer: {title} (kill path, --kill-grace {grace:g} s)"
        rows.append(Row(f"int.{key}", label, "ms", _ms(results[key]), jres.get(key),
                        targets=target, jupyter_note=jnotes.get(key, ""),
                        note=f"cellbox answered: {', '.join(sorted(statuses[key]))}."))
    rows[0].note += (" Timed from sending `session/interrupt` (Jupyter: `km.interrupt_kernel()`) to "
                     "the eval's answer; the cell first prints 'go' so it is surely running.")
    return rows


# --- 5. memory -------------------------------------------------------------------------------


def _many_cellbox(n: int) -> tuple[float, float, float, float, bool]:
    """Create ``n`` sessions at once; (seconds to create them all, total PSS of the server's
    whole process tree in MiB, children-only PSS in MiB, supervisor's own PSS in MiB, zygote)."""
    with CellboxServer() as srv:
        zygote = has_zygote(srv.initialize(), srv.stats())
        time.sleep(0.3)  # let the zygote and warm pool come up, as in a server that has run a while
        t0 = pc()
        rids = [srv.send("session/create", {}) for _ in range(n)]
        pids = []
        for rid in rids:
            reply = srv.wait(rid)
            pids.append(reply["result"]["pid"])
        created = pc() - t0
        evals = [srv.send_eval(s, ONE_PLUS_ONE) for s in _session_ids(srv)]
        for rid in evals:
            srv.wait(rid)
        time.sleep(0.3)
        tree = descendants(srv.pid)
        total = sum(pss_kib(p) for p in tree) / MIB
        children = sum(pss_kib(p) for p in pids) / MIB
        sup = pss_kib(srv.pid) / MIB
    return created, total, children, sup, zygote


def _session_ids(srv: CellboxServer) -> list[str]:
    return [s["session"] for s in srv.call("session/list", {})["sessions"]]


def _one_idle(*args: str) -> tuple[float, bool]:
    with CellboxServer(*args) as srv:
        zygote = has_zygote(srv.initialize(), srv.stats())
        sid, pid = srv.create()
        srv.eval(sid, ONE_PLUS_ONE)
        time.sleep(0.3)
        return pss_kib(pid) / MIB, zygote


@scenario("memory", "PSS of one idle session and of 100 idle sessions (/proc/PID/smaps_rollup)")
def memory(ctx: Context) -> list[Row]:
    many = ctx.n(100, 20)
    one, zygote = _one_idle()
    fresh, _ = _one_idle(*flags("--no-zygote", "--warm 0"))
    created, total, children, sup, many_zygote = _many_cellbox(many)
    j_one = j_total = j_created = None
    if ctx.jupyter:
        from bench.jupyter_driver import JupyterKernel

        with jupyter_kernel() as k:
            k.execute(ONE_PLUS_ONE)
            time.sleep(0.3)
            j_one = [pss_kib(k.pid) / MIB]
        kernels: list = []
        try:
            t0 = pc()
            for _ in range(many):
                kernels.append(JupyterKernel(transport="ipc").start())
            for k in kernels:
                k.connect(ready_timeout=120)
            j_created = [pc() - t0]
            for k in kernels:
                k.execute(ONE_PLUS_ONE)
            time.sleep(0.3)
            j_total = [sum(pss_kib(k.pid) for k in kernels) / MIB]
        finally:
            _shutdown_all(kernels)
    zy = "" if zygote else "zygote: not available"
    return [
        Row("mem.one", "PSS of one idle session (server default)", "MiB", [one], j_one,
            targets=[Target("<=", 5)], cellbox_note=zy,
            note="The session's child after one `1+1`; with the zygote, pages it shares with the "
                 "zygote and the warm children are split among them (that is what PSS means)."),
        Row("mem.one.fresh", "PSS of one idle session (fresh interpreter, --no-zygote)", "MiB",
            [fresh], j_one),
        Row("mem.many", f"PSS of {many} idle sessions, total", "MiB", [total], j_total,
            targets=[Target("<=", 600 * many / 100)], cellbox_note="" if many_zygote else "zygote: not available",
            note=f"cellbox: the server's whole process tree (supervisor {sup:.1f} MiB, zygote, warm "
                 f"children and the {many} session children: {children:.1f} MiB of it); Jupyter: "
                 f"the {many} kernel processes (its client side is not counted)."),
        Row("mem.many.create", f"create {many} sessions at once (all answered)", "ms", [created * MS],
            [j_created[0] * MS] if j_created else None, targets=[Target("<=", 1000 * many / 100)],
            note=f"cellbox: {many} `session/create` requests sent together; Jupyter: {many} "
                 "`start_kernel` calls, then `wait_for_ready` on each (IPC transport here: with TCP, "
                 "ports jupyter_client picks for 100 kernels at once collide and kernels die)."),
    ]


def _shutdown_all(kernels: list) -> None:
    threads = [threading.Thread(target=k.shutdown) for k in kernels]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- 6. output -------------------------------------------------------------------------------

OUTPUT_BYTES = 10_000_000


def output_code(line_bytes: int) -> str:
    """A cell printing OUTPUT_BYTES as lines of ``line_bytes`` (newline included)."""
    return (f"line = 'x' * {line_bytes - 1}\n"
            f"for _ in range({OUTPUT_BYTES // line_bytes}):\n    print(line)")


OUTPUT_CODE = output_code(1000)


def output_rate_cellbox(srv: CellboxServer, sid: str, code: str) -> float:
    """MB/s of one eval printing OUTPUT_BYTES, counted in ``session/output`` notifications."""
    got = [0]

    def count(msg: dict) -> None:
        if msg.get("method") == "session/output":
            got[0] += len(msg["params"]["text"])

    t0 = pc()
    result = srv.eval(sid, code, on_note=count, collectOutput=False)
    dt = pc() - t0
    if result["status"] != "ok" or got[0] != OUTPUT_BYTES:
        raise RuntimeError(f"output: {got[0]} of {OUTPUT_BYTES} bytes reached the client; {result}")
    return OUTPUT_BYTES / 1e6 / dt


def output_rate_jupyter(k, code: str) -> float:
    got = [0]

    def count(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            got[0] += len(msg["content"]["text"])

    t0 = pc()
    content = k.execute(code, on_iopub=count)
    dt = pc() - t0
    if content["status"] != "ok" or got[0] != OUTPUT_BYTES:
        raise RuntimeError(f"Jupyter output: {got[0]} of {OUTPUT_BYTES} bytes arrived; {content}")
    return OUTPUT_BYTES / 1e6 / dt


@scenario("output", "10 MB printed by a cell: MB/s reaching the client")
def output(ctx: Context) -> list[Row]:
    n = ctx.n(5, 2)
    shapes = [(1000, "10,000 `print`s of 1,000 B"), (100, "100,000 `print`s of 100 B")]
    rates: dict[int, list[float]] = {size: [] for size, _ in shapes}
    jrates: dict[int, list[float]] = {size: [] for size, _ in shapes}
    with CellboxServer() as srv:
        srv.initialize()
        sid, _ = srv.create(limits={"outputBytes": 4 * OUTPUT_BYTES})
        for size, _ in shapes:
            for _ in range(n):
                rates[size].append(output_rate_cellbox(srv, sid, output_code(size)))
    pipe = [OUTPUT_BYTES / 1e6 / floor.pipe_bandwidth(OUTPUT_BYTES, 1000) for _ in range(n)]
    if ctx.jupyter:
        with jupyter_kernel() as k:
            for size, _ in shapes:
                for _ in range(n):
                    jrates[size].append(output_rate_jupyter(k, output_code(size)))
    rows = [
        Row(f"out.{size}", f"10 MB printed ({title}): MB/s to the client", "MB/s", rates[size],
            jrates[size] or None, higher_is_better=True, targets=[Target(">=", 60)])
        for size, title in shapes
    ]
    rows[0].note = ("From sending the eval to its answer, all 10 MB counted in `session/output` "
                    "notifications (`collectOutput: false`, output cap raised to 40 MB); Jupyter: "
                    "IOPub `stream` messages until `idle`.")
    rows.append(Row("floor.pipe", "raw pipe floor: 10 MB in 1,000 B `os.write`s", "MB/s", pipe,
                    higher_is_better=True, peer=False))
    return rows

