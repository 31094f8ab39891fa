"""Multi-cell acceptance cases, run through ``cellbox serve`` over NDJSON, one session per case.

A case is a name and a list of steps; a step is ``(code, expect)`` where ``expect`` maps result
fields to what they must be: ``value`` (the repr, or None), ``stdout``, ``stderr``, ``status``,
``error`` (the exception type), ``message`` (a substring of the error message), ``traceback``
(substrings that must appear in the traceback, in order), ``warnings`` (names flagged),
``params`` (extra eval params, e.g. ``{"timeout": 0.3}``).
"""

from __future__ import annotations

CASES: list[tuple[str, list[tuple[str, dict]]]] = [
    # --- values and the namespace -----------------------------------------------------
    ("last expression", [("1 + 1", {"value": "2"})]),
    ("statement has no value", [("x = 5", {"value": None}), ("x", {"value": "5"})]),
    ("semicolon suppresses", [("1 + 1;", {"value": None}), ("1 + 1  ;  # hi", {"value": None})]),
    ("semicolon inside string", [("'a;'", {"value": "'a;'"})]),
    ("none is no value", [("None", {"value": None})]),
    ("underscore", [("40 + 2", {"value": "42"}), ("_ + 1", {"value": "43"})]),
    ("functions see later globals", [("def f(): return g", {}), ("g = 3", {}), ("f()", {"value": "3"})]),
    ("global statement", [("n = 0\ndef inc():\n    global n\n    n += 1", {}), ("inc(); inc(); n", {"value": "2"})]),
    ("nonlocal", [("def mk():\n    c = 0\n    def f():\n        nonlocal c\n        c += 1\n        return c\n    return f\nf = mk(); f(); f()", {"value": "2"})]),
    ("del then NameError", [("y = 1", {}), ("del y", {}), ("y", {"status": "error", "error": "NameError"})]),
    ("walrus in comprehension", [("[z := i for i in range(3)]\nz", {"value": "2"})]),
    ("generator sees globals", [("k = 10", {}), ("sum(k + i for i in range(3))", {"value": "33"})]),
    ("class persists", [("class A:\n    def __repr__(self): return 'A!'", {}), ("A()", {"value": "A!"})]),
    ("decorator", [("import functools\n@functools.lru_cache\ndef sq(x): return x * x\nsq(9)", {"value": "81"})]),
    ("__name__ is __main__", [("__name__", {"value": "'__main__'"})]),
    ("future import persists", [("from __future__ import annotations", {}), ("def h(x: Undefined) -> Nope: pass\nh.__annotations__['x']", {"value": "'Undefined'"})]),
    ("pickle a class defined in a cell", [("import pickle\nclass P:\n    v = 3", {}), ("pickle.loads(pickle.dumps(P())).v", {"value": "3"})]),
    # --- output --------------------------------------------------------------------------
    ("print end and sep", [("print('a', 'b', sep='-', end='!')\nprint()", {"stdout": "a-b!\n"})]),
    ("stdout write count", [("import sys\nsys.stdout.write('abc')", {"value": "3", "stdout": "abc"})]),
    ("stderr", [("import sys\nprint('e', file=sys.stderr)", {"stderr": "e\n", "stdout": ""})]),
    ("unicode output", [("print('日本語 ✓ é')", {"stdout": "日本語 ✓ é\n"})]),
    ("long line", [("print('x' * 100000)", {"stdout": "x" * 100000 + "\n"})]),
    ("output kept apart from value", [("print('p')\n7", {"stdout": "p\n", "value": "7"})]),
    # --- await ---------------------------------------------------------------------------
    ("top-level await", [("import asyncio\nawait asyncio.sleep(0)\n'done'", {"value": "'done'"})]),
    ("await value", [("import asyncio\nasync def f(): return 4\nawait f()", {"value": "4"})]),
    ("await in comprehension", [("import asyncio\nasync def f(i): return i * 2\n[await f(i) for i in range(3)]", {"value": "[0, 2, 4]"})]),
    ("await in f-string", [("import asyncio\nasync def f(): return 'x'\nf'{await f()}!'", {"value": "'x!'"})]),
    ("async for", [("async def gen():\n    for i in range(3):\n        yield i\nout = []\nasync for v in gen():\n    out.append(v)\nout", {"value": "[0, 1, 2]"})]),
    ("async with", [("import contextlib\n@contextlib.asynccontextmanager\nasync def cm():\n    yield 5\nasync with cm() as v:\n    w = v\nw", {"value": "5"})]),
    ("task survives across cells", [("import asyncio\nev = asyncio.Event()\nasync def waiter():\n    await ev.wait()\n    return 'woke'\nt = asyncio.create_task(waiter())", {}), ("ev.set()\nawait t", {"value": "'woke'"})]),
    ("create_task without await", [("import asyncio\nasync def c(): return 9\nt2 = asyncio.create_task(c())", {}), ("await t2", {"value": "9"})]),
    ("background task runs between cells", [("import asyncio\nticks = []\nasync def tick():\n    while True:\n        ticks.append(1)\n        await asyncio.sleep(0.001)\nbg = asyncio.create_task(tick())", {}), ("await asyncio.sleep(0.05)\nlen(ticks) > 3", {"value": "True"}), ("bg.cancel()", {})]),
    ("contextvar persists", [("import contextvars\ncv = contextvars.ContextVar('cv', default=0)\ncv.set(5)", {}), ("cv.get()", {"value": "5"})]),
    ("queue across cells", [("import asyncio\nq = asyncio.Queue()\nawait q.put(1)", {}), ("await q.get()", {"value": "1"})]),
    ("taskgroup error group", [("import asyncio\nasync def bad():\n    raise ValueError('v')\nasync with asyncio.TaskGroup() as tg:\n    tg.create_task(bad())", {"status": "error", "error": "ExceptionGroup"})]),
    ("asyncio.run explains itself", [("import asyncio\nasync def m(): return 1\nasyncio.run(m())", {"status": "error", "error": "RuntimeError"})]),
    # --- rewrites ------------------------------------------------------------------------
    ("def with await becomes async", [("import asyncio\ndef f():\n    await asyncio.sleep(0)\n    return 3", {}), ("await f()", {"value": "3"})]),
    ("method with await", [("import asyncio\nclass C:\n    def m(self):\n        await asyncio.sleep(0)\n        return 'm'", {}), ("await C().m()", {"value": "'m'"})]),
    ("lambda with await", [("import asyncio\nf = lambda: await asyncio.sleep(0, 'lam')", {}), ("await f()", {"value": "'lam'"})]),
    # --- errors --------------------------------------------------------------------------
    ("zero division traceback", [("1/0", {"status": "error", "error": "ZeroDivisionError", "message": "division by zero", "traceback": ['File "<cell 1>", line 1', "1/0", "ZeroDivisionError: division by zero"]})]),
    ("traceback through earlier cell", [("def boom():\n    raise KeyError('k')", {}), ("boom()", {"error": "KeyError", "traceback": ['File "<cell 2>", line 1', 'File "<cell 1>", line 2, in boom', "raise KeyError('k')"]})]),
    ("syntax error has no partial execution", [("a = 1\nb = = 2", {"status": "error", "error": "SyntaxError", "traceback": ['File "<cell 1>", line 2']}), ("'a' in globals()", {"value": "False"})]),
    ("indentation error", [("if True:\nprint(1)", {"error": "IndentationError"})]),
    ("chained cause", [("try:\n    1/0\nexcept Exception as e:\n    raise ValueError('wrapped') from e", {"error": "ValueError", "traceback": ["ZeroDivisionError", "direct cause", "ValueError: wrapped"]})]),
    ("notes", [("e = ValueError('n')\ne.add_note('a note')\nraise e", {"error": "ValueError", "traceback": ["a note"]})]),
    ("system exit survives", [("v = 1", {}), ("raise SystemExit(3)", {"status": "error", "error": "SystemExit"}), ("v", {"value": "1"})]),
    ("keyboard interrupt raised by user", [("raise KeyboardInterrupt", {"status": "error", "error": "KeyboardInterrupt"})]),
    ("no engine frames", [("1/0", {"error": "ZeroDivisionError", "traceback": ["<cell 1>"], "not_traceback": ["cellbox/child", "executor.py"]})]),
    ("sys.last_value", [("1/0", {"error": "ZeroDivisionError"}), ("import sys\ntype(sys.last_value).__name__", {"value": "'ZeroDivisionError'"})]),
    ("next cell after error works", [("undefined_name", {"error": "NameError"}), ("2 * 3", {"value": "6"})]),
    # --- protection ----------------------------------------------------------------------
    ("rebinding __builtins__", [("__builtins__ = None", {}), ("len([1, 2])", {"value": "2"})]),
    ("rebinding __name__", [("__name__ = 'x'", {}), ("__name__", {"value": "'__main__'"})]),
    ("print rebound to non-callable", [("print = 5", {}), ("print('ok')", {"stdout": "ok\n"})]),
    ("globals cleared", [("globals().clear()", {}), ("print('still')\nlen('ab')", {"stdout": "still\n", "value": "2"})]),
    ("deleting a builtin", [("import builtins\ndel builtins.len", {}), ("len('abc')", {"value": "3"})]),
    # --- timeouts, input ----------------------------------------------------------------
    ("soft timeout in await", [("import asyncio\ntry:\n    await asyncio.sleep(10)\nfinally:\n    fin = True", {"status": "timeout", "error": "TimeoutError", "params": {"timeout": 0.3}}), ("fin", {"value": "True"})]),
    ("soft timeout in sync code", [("import time\ntime.sleep(10)", {"status": "timeout", "error": "TimeoutError", "params": {"timeout": 0.3}}), ("1", {"value": "1"})]),
    ("input without stdin", [("input('? ')", {"error": "EOFError", "message": "stdin"})]),
    # --- analysis and rich values -------------------------------------------------------
    ("blocking call warned", [("import time\nasync def f():\n    time.sleep(0)\nawait f()", {"warnings": ["time.sleep"]})]),
    ("aliased blocking call", [("from time import sleep as zz\nasync def g():\n    zz(0)\nawait g()", {"warnings": ["time.sleep"]})]),
    ("html mime", [("class H:\n    def _repr_html_(self): return '<b>h</b>'\nH()", {"mime": {"text/html": "<b>h</b>"}})]),
]
