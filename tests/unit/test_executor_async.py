"""Top-level await, the persistent loop and context, background tasks."""

from __future__ import annotations

import asyncio

from tests.unit.executor_harness import h  # noqa: F401 - fixture

SETUP = "import asyncio\nasync def f(x=1):\n    await asyncio.sleep(0)\n    return x\n"


def test_top_level_await_value(h):
    h.ok(SETUP)
    assert h.value("await f(42)") == "42"


def test_await_in_middle_and_value_after(h):
    h.ok(SETUP)
    assert h.value("a = await f(2)\nb = await f(3)\na * b") == "6"


def test_async_for(h):
    h.ok("import asyncio\nasync def agen():\n    for i in range(3):\n"
         "        await asyncio.sleep(0)\n        yield i")
    assert h.value("out = []\nasync for v in agen():\n    out.append(v)\nout") == "[0, 1, 2]"


def test_async_with_asynccontextmanager(h):
    h.ok("import contextlib, asyncio\nlog = []\n@contextlib.asynccontextmanager\n"
         "async def cm():\n    log.append('enter')\n    yield 'v'\n    log.append('exit')")
    assert h.value("async with cm() as v:\n    log.append(v)\nlog") == "['enter', 'v', 'exit']"


def test_await_in_list_comprehension(h):
    h.ok(SETUP)
    assert h.value("[await f(i) for i in range(3)]") == "[0, 1, 2]"


def test_async_comprehension(h):
    h.ok("async def agen():\n    yield 1\n    yield 2")
    assert h.value("[x async for x in agen()]") == "[1, 2]"


def test_await_in_fstring(h):
    h.ok(SETUP)
    assert h.value("f'{await f(7)}'") == "'7'"


def test_await_in_default_value(h):
    h.ok(SETUP)
    assert h.value("def g(v=await f(5)):\n    return v\ng()") == "5"


def test_await_in_dict_and_call_args(h):
    h.ok(SETUP)
    assert h.value("{'k': await f(1)}, max(await f(2), 1)") == "({'k': 1}, 2)"


def test_coroutine_value_is_not_awaited_implicitly(h):
    h.ok(SETUP)
    done = h.ok("f(3)")
    assert done.value.type == "coroutine"
    assert h.value("await _") == "3"


def test_awaited_last_expression_is_the_value(h):
    h.ok(SETUP)
    done = h.ok("await f([1, 2])")
    assert done.value.type == "list"
    assert h.value("_") == "[1, 2]"


def test_same_loop_across_cells(h):
    h.ok("import asyncio\nl1 = asyncio.get_running_loop()")
    h.ok("await asyncio.sleep(0)\nl2 = asyncio.get_running_loop()")
    assert h.value("l1 is l2 and l1 is asyncio.get_running_loop()") == "True"
    assert h.ex.namespace["l1"] is h.loop


def test_create_task_without_await(h):
    h.ok("import asyncio\nt = asyncio.create_task(asyncio.sleep(0, 'done'))")
    assert h.value("await t") == "'done'"


def test_background_task_keeps_running_between_cells(h):
    h.ok("import asyncio\nticks = []\nasync def ticker():\n    while True:\n"
         "        ticks.append(1)\n        await asyncio.sleep(0)\n"
         "bg = asyncio.create_task(ticker())")
    h.ok("await asyncio.sleep(0)\nawait asyncio.sleep(0)")
    first = len(h.ex.namespace["ticks"])
    h.ok("for _i in range(3):\n    await asyncio.sleep(0)")
    assert len(h.ex.namespace["ticks"]) > first
    assert h.value("bg.done()") == "False"


def test_event_across_cells(h):
    h.ok("import asyncio\nev = asyncio.Event()\nseen = []\nasync def waiter():\n"
         "    await ev.wait()\n    seen.append('woke')\nw = asyncio.create_task(waiter())")
    h.ok("await asyncio.sleep(0)")
    assert h.value("seen") == "[]"
    assert h.value("ev.set()\nawait w\nseen") == "['woke']"


def test_queue_across_cells(h):
    h.ok("import asyncio\nq = asyncio.Queue()\nasync def producer():\n    for i in range(3):\n"
         "        await q.put(i)\np = asyncio.create_task(producer())")
    assert h.value("[await q.get() for _ in range(3)]") == "[0, 1, 2]"


def test_lock_across_cells(h):
    h.ok("import asyncio\nlock = asyncio.Lock()\nawait lock.acquire()")
    h.ok("order = []\nasync def other():\n    async with lock:\n        order.append('other')\n"
         "o = asyncio.create_task(other())")
    assert h.value("await asyncio.sleep(0)\norder") == "[]"
    assert h.value("lock.release()\nawait o\norder") == "['other']"


def test_contextvar_set_persists_sync_and_async(h):
    h.ok("import contextvars, asyncio\ncv = contextvars.ContextVar('cv', default=0)\ncv.set(1)")
    assert h.value("cv.get()") == "1"
    h.ok("await asyncio.sleep(0)\ncv.set(2)")
    assert h.value("cv.get()") == "2"
    assert h.value("await asyncio.sleep(0)\ncv.get()") == "2"


def test_tasks_copy_the_session_context(h):
    h.ok("import contextvars, asyncio\nreq = contextvars.ContextVar('req')\nreq.set('abc')")
    h.ok("async def read():\n    return req.get()")
    assert h.value("await asyncio.create_task(read())") == "'abc'"


def test_gather(h):
    h.ok(SETUP)
    assert h.value("await asyncio.gather(f(1), f(2))") == "[1, 2]"


def test_user_asyncio_timeout_is_a_plain_error(h):
    done = h.error("import asyncio\nasync with asyncio.timeout(0):\n    await asyncio.sleep(1)")
    assert done.error.type == "TimeoutError"
    assert done.stopped is None


def test_background_task_error_reported_on_stderr(h):
    h.ok("import asyncio\nasync def boom():\n    raise ValueError('bg failure')\n"
         "asyncio.create_task(boom())")
    h.ok("await asyncio.sleep(0)\nawait asyncio.sleep(0)")
    err = h.text("stderr")
    assert "Task exception was never retrieved" in err
    assert "ValueError: bg failure" in err
    assert '"<cell 1>", line 3, in boom' in err
    assert "cellbox/child" not in err


def test_callback_error_reported_on_stderr(h):
    h.ok("import asyncio\nasyncio.get_running_loop().call_soon(lambda: 1/0)")
    h.ok("await asyncio.sleep(0)")
    err = h.text("stderr")
    assert "Exception in callback" in err
    assert "ZeroDivisionError" in err


def test_task_group_exception_group(h):
    h.ok("import asyncio\nasync def fail(m):\n    await asyncio.sleep(0)\n    raise ValueError(m)")
    done = h.error("async with asyncio.TaskGroup() as tg:\n    tg.create_task(fail('a'))\n"
                   "    tg.create_task(fail('b'))")
    assert done.error.type == "ExceptionGroup"
    assert "ValueError: a" in done.error.traceback
    assert "ValueError: b" in done.error.traceback
    assert "<cell 1>" in done.error.traceback


def test_except_star(h):
    h.ok("import asyncio\nasync def fail():\n    raise KeyError('k')")
    code = ("caught = []\ntry:\n    async with asyncio.TaskGroup() as tg:\n"
            "        tg.create_task(fail())\nexcept* KeyError as eg:\n"
            "    caught.append(type(eg.exceptions[0]).__name__)\ncaught")
    assert h.value(code) == "['KeyError']"


def test_sync_cell_takes_fast_path(h):
    calls = []
    real = h.loop.create_task

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    async def drive():
        h.loop.create_task = spy
        try:
            h.ex.start("sum(range(10))", execution_count=1, on_done=calls.append)
        finally:
            del h.loop.create_task

    h.loop.run_until_complete(drive())
    assert len(calls) == 1 and calls[0].value.repr == "45"


def test_cell_task_runs_in_session_context(h):
    h.ok("import asyncio, contextvars\nmark = contextvars.ContextVar('mark')\nmark.set('cell')")

    async def outside():
        return h.ex.namespace["mark"].get("unset")

    assert h.loop.run_until_complete(outside()) == "unset"
    assert h.value("await asyncio.sleep(0)\nmark.get()") == "'cell'"


def test_loop_still_works_after_many_cells(h):
    h.ok("import asyncio")
    for i in range(20):
        assert h.value(f"await asyncio.sleep(0, {i})") == str(i)
    assert asyncio.get_event_loop() is h.loop


def test_builtins_print_is_restored_as_soon_as_an_awaiting_cell_ends(h):
    import builtins

    h.ok("import asyncio, builtins\nawait asyncio.sleep(0)\nbuiltins.print = None")
    assert callable(builtins.print)  # the engine and the rest of the process need it now
