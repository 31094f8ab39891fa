"""In-process costs, no IPC: scenario 7 (the executor) and scenario 8 (the protocol codec).

7. ``executor``: per-cell time of ``cellbox.child.executor.Executor`` inside one process
   (what a child spends on a cell besides the channel), timed by ``bench/bench_executor.py``'s
   own harness: ``1+1`` (the compile cache hits), ``1+1`` with the cache off, and
   ``await asyncio.sleep(0)`` (the top-level-await path: the seed's TLA latency gate), against
   IPython's ``InteractiveShell.run_cell`` (what ipykernel runs per cell) and against the
   minimal top-level-await loop (compile with ``PyCF_ALLOW_TOP_LEVEL_AWAIT``, eval, await,
   repr: the shape of CPython's ``asyncio`` REPL). Each side runs in its own fresh interpreter
   (``python -m bench.inchild executor|ipython N``, JSON on stdout), so neither sees the
   other's imports or hooks.
8. ``codec``: one ``session/eval`` request decoded and its result encoded, reusing
   ``bench/bench_codec.py``'s message and codec, against jupyter_client's ``Session``
   (``deserialize`` of an ``execute_request`` and ``serialize`` of its ``execute_reply``,
   HMAC-SHA256 signed as ipykernel does) and against the stdlib ``json`` baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from bench.core import ROOT, Context, Row, Target, median, per_op, scenario

US = 1e6
# (key, title, bench_executor kind, code, kwargs, target µs from bench_executor.py)
CELLS = [
    ("1+1", "`1+1`", "sync", "1+1", {}, 50),
    ("await asyncio.sleep(0)", "`await asyncio.sleep(0)`", "async", "await asyncio.sleep(0)", {}, 150),
    ("nocache", "`1+1`, compile cache off", "sync", "1+1", {"ast_cache_size": 0}, None),
]


# --- the in-child programs (run in a fresh interpreter) ----------------------------------------


def _minimal_tla(code: str, n: int) -> list[float]:
    """µs per cell of the least a top-level-await executor does: compile with
    ``PyCF_ALLOW_TOP_LEVEL_AWAIT``, eval, await the coroutine, repr the value."""
    import ast
    import asyncio
    import builtins
    import inspect

    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    exec("import asyncio", ns)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

    async def go() -> list[float]:
        out = []
        for i in range(n + max(200, n // 10)):
            t0 = time.perf_counter_ns()
            value = eval(compile(code, "<cell>", "eval", flags=flags), ns)
            if inspect.iscoroutine(value):
                value = await value
            if value is not None:
                repr(value)
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out[-n:]

    return asyncio.run(go())


def _executor_samples(n: int) -> dict[str, list[float]]:
    """µs per cell, timed by bench/bench_executor.py's own harness (``_measure``)."""
    from bench import bench_executor

    out = {f"cellbox:{key}": bench_executor._measure(kind, code, n, **kwargs)
           for key, _, kind, code, kwargs, _ in CELLS}
    out["minimal:await asyncio.sleep(0)"] = _minimal_tla("await asyncio.sleep(0)", n)
    return out


def _ipython_samples(n: int) -> dict[str, list[float]]:
    """µs per ``InteractiveShell.run_cell`` (IPython always parses and compiles: no cache)."""
    from IPython.core.interactiveshell import InteractiveShell

    class Null:
        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    shell = InteractiveShell.instance()
    real = sys.stdout
    sys.stdout = Null()  # the displayhook prints "Out[n]: 2"
    try:
        shell.run_cell("import asyncio", store_history=True)
        out: dict[str, list[float]] = {}
        for code in ("1+1", "await asyncio.sleep(0)"):
            samples = []
            for _ in range(n + max(100, n // 10)):
                t0 = time.perf_counter_ns()
                result = shell.run_cell(code, store_history=True)
                samples.append((time.perf_counter_ns() - t0) / 1000)
                if not result.success:
                    raise RuntimeError(f"IPython failed on {code!r}: {result.error_in_exec}")
            out[f"ipython:{code}"] = samples[-n:]
    finally:
        sys.stdout = real
    return out


def _run_child(kind: str, n: int) -> dict[str, list[float]]:
    proc = subprocess.run([sys.executable, "-m", "bench.inchild", kind, str(n)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.inchild {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def executor_samples(n: int) -> dict[str, list[float]]:
    """µs per cell: ``cellbox:KEY`` for each of CELLS and ``minimal:await asyncio.sleep(0)``,
    measured in a fresh interpreter."""
    return _run_child("executor", n)


# --- scenario 7 ------------------------------------------------------------------------------


@scenario("executor", "in-child cost per cell, no IPC (executor vs IPython run_cell vs minimal TLA)")
def executor(ctx: Context) -> list[Row]:
    cb = executor_samples(ctx.n(10_000, 2000))
    ip = _run_child("ipython", ctx.n(1500, 300)) if ctx.jupyter else {}
    rows = []
    for key, title, _, code, _, target in CELLS:
        jp = ip.get(f"ipython:{code}")
        rows.append(Row(f"ex.{key}", f"executor, in-process: {title}", "µs", cb[f"cellbox:{key}"], jp,
                        targets=[Target("<=", target)] if target else []))
    rows[0].note = ("Timed by bench/bench_executor.py (sync cells around `Executor.start`, awaiting "
                    "cells from `start` to `on_done`). Jupyter column: IPython "
                    "`InteractiveShell.run_cell` in-process, store_history on as in ipykernel; "
                    "IPython has no compile cache, so both `1+1` rows show the same measurement.")
    minimal = cb["minimal:await asyncio.sleep(0)"]
    rows.append(Row("ex.minimal-tla", "minimal TLA loop: `await asyncio.sleep(0)` (floor)", "µs", minimal,
                    peer=False, note="compile(PyCF_ALLOW_TOP_LEVEL_AWAIT) + eval + await + repr, nothing else."))
    tla = median(cb["cellbox:await asyncio.sleep(0)"])
    rows.append(Row("ex.tla/minimal", "executor TLA cell / minimal TLA loop (medians)", "×",
                    [tla / median(minimal)], targets=[Target("<=", 10)], peer=False,
                    note="The seed's TLA latency gate as a same-run ratio; `python -m bench.gate` "
                         "fails above 10×."))
    return rows


# --- scenario 8 ------------------------------------------------------------------------------


def codec_functions() -> dict[str, Callable[[], object]]:
    """The per-eval server-side codec work of cellbox, the stdlib baseline and Jupyter."""
    from bench import bench_codec as bc

    dispatcher = bc.Dispatcher()

    def cellbox() -> bytes:
        request = dispatcher.receive(bc.REQUEST)
        return bc.encode_result(request.raw_id, bc.RESULT)

    def stdlib() -> bytes:
        request = json.loads(bc.REQUEST)
        return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": bc.RESULT_DICT},
                          separators=(",", ":")).encode()

    fns: dict[str, Callable[[], object]] = {"cellbox": cellbox, "stdlib": stdlib}
    try:
        from jupyter_client.session import Session
    except ImportError:
        return fns
    session = Session(key=b"0123456789abcdef0123456789abcdef", signature_scheme="hmac-sha256",
                      username="bench")
    request = session.msg("execute_request", content={
        "code": "import math\nx = sum(i * i for i in range(100))\nprint(x)\nx", "silent": False,
        "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    frames = session.serialize(request)
    reply_content = {"status": "ok", "execution_count": 3, "user_expressions": {}, "payload": []}

    history = session.digest_history  # replay protection: the same frames are fed each time

    def jupyter() -> list:
        history.clear()
        _, msg_list = session.feed_identities(frames)
        msg = session.deserialize(msg_list)
        return session.serialize(session.msg("execute_reply", content=reply_content, parent=msg))

    fns["jupyter"] = jupyter
    return fns


@scenario("codec", "protocol codec: decode an eval request + encode its result")
def codec(ctx: Context) -> list[Row]:
    fns = codec_functions()
    rounds, calls = ctx.n(300, 100), 50
    cb = [s * US for s in per_op(fns["cellbox"], rounds, calls)]
    std = [s * US for s in per_op(fns["stdlib"], rounds, calls)]
    jp = [s * US for s in per_op(fns["jupyter"], rounds, calls)] if ctx.jupyter and "jupyter" in fns else None
    return [
        Row("codec.eval", "codec: decode `session/eval` request + encode result", "µs", cb, jp,
            note="cellbox: `Dispatcher.receive` (validated `EvalParams`) + `encode_result` (from "
                 "bench/bench_codec.py); Jupyter: `Session.deserialize` of an `execute_request` + "
                 "`serialize` of its `execute_reply`, HMAC-SHA256 signed. Samples are means over 50 calls."),
        Row("codec.stdlib", "codec baseline: stdlib `json` loads + dumps (no validation)", "µs", std,
            peer=False),
    ]


def main(argv: list[str]) -> int:
    kind, n = argv[0], int(argv[1])
    result = _executor_samples(n) if kind == "executor" else _ipython_samples(n)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
