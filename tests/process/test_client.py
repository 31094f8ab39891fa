"""The Python client (``cellbox.connect``) and the ``Sandbox`` facade against a real server.

Every test spawns ``python -m cellbox serve`` over real pipes with a unique tag in its
environment and checks, at the end, that no process carrying the tag survived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import anyio
import pytest

import cellbox
from cellbox.client import Client, EvalStream, ServerGone, Session, connect
from cellbox.protocol import errors
from cellbox.protocol import messages as m
from tests.harness import assert_no_leftovers, leftovers

pytestmark = pytest.mark.anyio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLEEPER = "import time\nx = 'kept'\nprint('started', flush=True)\ntime.sleep(100)"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def tag():
    """A unique environment tag for the server; at teardown no tagged process may be left."""
    value = uuid.uuid4().hex
    yield value
    assert_no_leftovers(value)


@pytest.fixture
async def client(tag):
    async with connect("--kill-grace", "1", env={"CELLBOX_TEST_TAG": tag}) as c:
        yield c
    assert c.returncode == 0


async def wait_started(events: EvalStream) -> None:
    """Consume the stream until the cell printed 'started' (it is then surely running)."""
    async for event in events:
        assert isinstance(event, m.OutputNotification), event
        if "started" in event.text:
            return


# ---------------------------------------------------------------------------------------------
# Calls and typed results


async def test_eval_keeps_state_and_returns_typed_result(client: Client):
    session = await client.create_session(name="calc")
    assert isinstance(session, Session) and session.pid and session.python
    first = await session.eval("x = 41")
    assert isinstance(first, m.EvalResult)
    assert first.status == "ok" and first.value is None and first.execution_count == 1
    r = await session.eval("x + 1")
    assert r.status == "ok" and r.execution_count == 2
    assert isinstance(r.value, m.Value) and r.value.repr == "42" and r.value.type == "int"
    assert r.state_lost is False and r.cause is None


async def test_user_errors_are_results(client: Client):
    session = await client.create_session()
    r = await session.eval("1/0")
    assert r.status == "error" and isinstance(r.error, m.ErrorInfo)
    assert r.error.type == "ZeroDivisionError" and "<cell 1>" in r.error.traceback


async def test_stream_yields_events_in_order_then_the_result(client: Client):
    session = await client.create_session()
    code = (
        "import sys, asyncio\n"
        "for i in range(3):\n"
        "    print(i, flush=True)\n"
        "    await asyncio.sleep(0)\n"
        "print('oops', file=sys.stderr, flush=True)\n"
        "display({'a': 1})\n"
        "'done'"
    )
    seen = []
    async with session.stream(code) as events:
        assert events.result is None and isinstance(events.request_id, int)
        async for event in events:
            seen.append(event)
        assert events.result is seen[-1]
    stdout = "".join(e.text for e in seen if isinstance(e, m.OutputNotification) and e.stream == "stdout")
    stderr = "".join(e.text for e in seen if isinstance(e, m.OutputNotification) and e.stream == "stderr")
    assert stdout == "0\n1\n2\n" and stderr == "oops\n"
    displays = [e for e in seen if isinstance(e, m.DisplayNotification)]
    assert len(displays) == 1 and "text/plain" in displays[0].data
    assert all(e.request_id == events.request_id for e in seen[:-1])
    result = seen[-1]
    assert isinstance(result, m.EvalResult) and result.value is not None and result.value.repr == "'done'"
    assert result.stdout == "0\n1\n2\n"
    # The iterator is exhausted after the result.
    assert [e async for e in events] == []


async def test_on_output_sync_and_async_callbacks(client: Client):
    session = await client.create_session()
    got: list[str] = []
    r = await session.eval("print('a')", on_output=lambda e: got.append(e.text))
    assert r.status == "ok" and got == ["a\n"]

    async def collect(event):
        await anyio.sleep(0)
        got.append(event.text)

    r = await session.eval("print('b')", on_output=collect, collect_output=False)
    assert got == ["a\n", "b\n"] and r.stdout is None


async def test_input_answered_by_on_input_and_by_send_input(client: Client):
    session = await client.create_session()
    prompts = []

    def answer(request: m.InputRequestNotification) -> str:
        prompts.append(request.prompt)
        return "Ada"

    r = await session.eval("name = input('who? ')\nname", on_input=answer)
    assert r.value is not None and r.value.repr == "'Ada'" and prompts == ["who? "]

    async with session.stream("input('again? ')", allow_stdin=True) as events:
        async for event in events:
            if isinstance(event, m.InputRequestNotification):
                assert event.prompt == "again? " and event.password is False
                await events.send_input("yes")
    assert events.result is not None and events.result.value.repr == "'yes'"

    r = await session.eval("input()")  # stdin not enabled: fails at once, never hangs
    assert r.status == "error" and r.error.type == "EOFError"


async def test_errors_raise_the_class_of_their_code(client: Client):
    with pytest.raises(errors.SessionNotFound) as info:
        await client.session("no-such-session").eval("1")
    assert info.value.code == -32010 and isinstance(info.value, errors.CellboxError)
    with pytest.raises(errors.MethodNotFound) as info2:
        await client.call("no/such/method")
    assert info2.value.code == -32601
    with pytest.raises(errors.InvalidParams) as info3:
        await client.call("session/eval", {"session": "x", "code": 42})
    assert info3.value.code == -32602 and "$.code" in info3.value.data
    with pytest.raises(errors.SessionStartFailed):
        await client.create_session(cwd="/no/such/directory")
    # The connection is still good after errors.
    await client.ping()


async def test_generic_call_and_server_methods(client: Client):
    assert await client.call("ping") == {}
    init = await client.initialize()
    assert init.server_info.name == "cellbox" and init.capabilities["cellbox"]["protocol"] == 1
    a = await client.create_session(name="a")
    b = await client.create_session(name="b")
    listing = await client.call("session/list", result_type=m.SessionListResult)
    assert {s.session for s in listing.sessions} == {a.id, b.id}
    infos = await client.list_sessions()
    assert {i.name for i in infos} == {"a", "b"} and all(i.state == "idle" for i in infos)
    await a.eval("1")
    stats = await client.stats()
    assert isinstance(stats, m.ServerStats) and stats.sessions["open"] == 2 and stats.evals["ok"] >= 1
    verdict = await client.is_complete("for i in range(3):")
    assert verdict.status == "incomplete" and verdict.indent == "    "


async def test_session_options_accept_snake_or_camel_keys(client: Client, tmp_path):
    session = await client.create_session(
        cwd=tmp_path, env={"CELLBOX_X": "yes"}, limits={"timeout": 5, "outputBytes": 100}
    )
    r = await session.eval("import os\nprint('x' * 1000)\n(os.getcwd(), os.environ['CELLBOX_X'])")
    assert r.value.repr == repr((str(tmp_path), "yes"))
    assert r.truncated.stdout > 0
    session = await client.create_session(limits=m.Limits(output_bytes=100), detection={"enabled": False})
    assert (await session.eval("print('x' * 1000)")).truncated.stdout > 0


async def test_sessions_run_in_parallel_from_many_tasks(client: Client):
    sessions = [await client.create_session() for _ in range(3)]
    results: dict[int, m.EvalResult] = {}

    async def work(i: int, s: Session) -> None:
        results[i] = await s.eval(f"import asyncio\nawait asyncio.sleep(0.01)\n{i} * 10")

    async with anyio.create_task_group() as tg:
        for i, s in enumerate(sessions):
            tg.start_soon(work, i, s)
    assert {i: r.value.repr for i, r in results.items()} == {0: "0", 1: "10", 2: "20"}


# ---------------------------------------------------------------------------------------------
# Interrupt, cancellation, restart, close


async def test_interrupt_keeps_state(client: Client):
    session = await client.create_session()
    async with session.stream(SLEEPER) as events:
        await wait_started(events)
        assert await session.interrupt() is True
        result = [e async for e in events][-1]
    assert result.status == "interrupted" and result.cause == "interrupt" and result.state_lost is False
    assert result.error is not None and result.error.type == "KeyboardInterrupt"
    assert (await session.eval("x")).value.repr == "'kept'"
    assert await session.interrupt() is False  # nothing running


async def test_cancelling_the_caller_interrupts_the_code(client: Client):
    session = await client.create_session()
    with anyio.CancelScope() as scope:
        async with session.stream(SLEEPER) as events:
            await wait_started(events)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    # Had the cell not been interrupted, this would wait 100 s behind it.
    with anyio.fail_after(10):
        r = await session.eval("x")
    assert r.value.repr == "'kept'"


async def test_leaving_the_stream_early_interrupts_the_code(client: Client):
    session = await client.create_session()
    async with session.stream(SLEEPER) as events:
        await wait_started(events)
    with anyio.fail_after(10):
        assert (await session.eval("x")).value.repr == "'kept'"


async def test_restart_gives_a_fresh_namespace(client: Client):
    session = await client.create_session()
    await session.eval("y = 1")
    old_pid = session.pid
    result = await session.restart()
    assert isinstance(result, m.SessionRestartResult) and result.session == session.id
    assert session.pid == result.pid != old_pid
    r = await session.eval("y")
    assert r.status == "error" and r.error.type == "NameError" and r.execution_count == 1


async def test_close_and_async_with(client: Client):
    session = await client.create_session()
    await session.close()
    with pytest.raises(errors.SessionNotFound):
        await session.eval("1")
    async with await client.create_session() as other:
        await other.eval("1")
    assert await client.list_sessions() == []


async def test_complete_inspect_shapes(client: Client):
    session = await client.create_session()
    await session.eval("import os\nvariable_one = 1")
    c = await session.complete("variable_o")
    assert isinstance(c, m.CompleteResult) and all(isinstance(s, str) for s in c.matches)
    assert 0 <= c.cursor_start <= c.cursor_end <= len("variable_o")
    c = await session.complete("os.pa", cursor=5)
    assert isinstance(c.matches, list) and c.cursor_end <= 5
    i = await session.inspect("len(", cursor=3)
    assert isinstance(i, m.InspectResult) and isinstance(i.found, bool) and isinstance(i.data, dict)
    verdict = await session.is_complete("def f():\n    return 1\n")
    assert verdict.status == "complete"
    assert (await session.is_complete("def f():")).status == "incomplete"


# ---------------------------------------------------------------------------------------------
# The server going away; the end of connect()


async def test_server_killed_under_pending_calls(tag):
    async with connect(env={"CELLBOX_TEST_TAG": tag}, stderr=subprocess.DEVNULL) as client:
        busy = await client.create_session()
        other = await client.create_session()
        failures: list[BaseException] = []

        async def pending_eval() -> None:
            try:
                await other.eval("import time; time.sleep(100)")
            except ServerGone as exc:
                failures.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pending_eval)
                async with busy.stream(SLEEPER) as events:
                    await wait_started(events)
                    assert client.pid is not None
                    os.kill(client.pid, signal.SIGKILL)
                    with pytest.raises(ServerGone) as info:
                        async for _ in events:
                            pass
        assert len(failures) == 1 and isinstance(failures[0], ServerGone)
        exc = info.value
        assert exc.returncode == -signal.SIGKILL and "status -9" in str(exc)
        assert isinstance(exc, errors.CellboxError) and exc.code == -32099
        assert client.closed
        with pytest.raises(ServerGone):
            await busy.eval("1")
        with pytest.raises(ServerGone):
            await client.ping()
    assert client.returncode == -signal.SIGKILL


async def test_leaving_connect_closes_the_server_and_every_child(tag):
    async with connect(env={"CELLBOX_TEST_TAG": tag}) as client:
        session = await client.create_session()
        await session.eval("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)'])")
        assert leftovers(tag)  # the server, its sentinel, the child, its grandchild
    assert client.returncode == 0 and client.closed
    with pytest.raises(ServerGone):
        await session.eval("1")


async def test_attach_to_given_streams_with_either_framing(tag):
    env = dict(os.environ, CELLBOX_TEST_TAG=tag, PYTHONPATH=ROOT)
    for framing in ("ndjson", "lsp"):
        process = await anyio.open_process([sys.executable, "-m", "cellbox", "serve"], env=env, stderr=None)
        async with process:
            async with connect(streams=(process.stdout, process.stdin), framing=framing) as client:
                assert client.pid is None
                session = await client.create_session()
                assert (await session.eval("6 * 7")).value.repr == "42"
            assert await process.wait() == 0


async def test_unrouted_notifications_reach_on_notification(tag, tmp_path):
    seen: list[tuple[str, object]] = []
    got = anyio.Event()

    def note(method: str, params: object) -> None:
        seen.append((method, params))
        got.set()

    go = tmp_path / "go"
    async with connect(env={"CELLBOX_TEST_TAG": tag}, on_notification=note) as client:
        session = await client.create_session()
        # A background task prints once the test says so, after its cell has finished: no
        # eval is waiting for that output.
        r = await session.eval(
            "import asyncio, os\n"
            "async def later():\n"
            f"    while not os.path.exists({str(go)!r}):\n"
            "        await asyncio.sleep(0.01)\n"
            "    print('from the background', flush=True)\n"
            "task = asyncio.ensure_future(later())"
        )
        assert r.status == "ok" and not seen
        go.touch()
        with anyio.fail_after(10):
            await got.wait()
    method, params = seen[0]
    assert method == "session/output" and isinstance(params, m.OutputNotification)
    assert params.text == "from the background\n"


# ---------------------------------------------------------------------------------------------
# The Sandbox facade


def test_sandbox_runs_and_keeps_state(tag):
    with cellbox.Sandbox(timeout=20, server_env={"CELLBOX_TEST_TAG": tag}) as sb:
        assert sb.run("x = 1").status == "ok"
        assert sb.run("x + 1").value.repr == "2"
        r = sb.run("1/0")
        assert r.status == "error" and r.error.type == "ZeroDivisionError"
        (info,) = sb.sessions
        assert isinstance(info, m.SessionInfo) and info.execution_count == 3
        sb.restart()
        assert sb.run("x").error.type == "NameError"
        r = sb.run("import time; time.sleep(5)", timeout=0.2)
        assert r.status == "timeout" and r.state_lost is False
    sb.close()  # idempotent
    with pytest.raises(RuntimeError):
        sb.run("1")


def test_sandbox_interrupt_from_another_thread(tag):
    with cellbox.Sandbox(server_env={"CELLBOX_TEST_TAG": tag}) as sb:
        started = threading.Event()
        results = []

        def run() -> None:
            results.append(sb.run(SLEEPER, on_output=lambda e: started.set()))

        worker = threading.Thread(target=run)
        worker.start()
        assert started.wait(10)
        assert sb.interrupt() is True
        worker.join(10)
        (r,) = results
        assert r.status == "interrupted" and r.state_lost is False
        assert sb.run("x").value.repr == "'kept'"


def test_sandbox_keyboard_interrupt_stops_the_code(tag):
    with cellbox.Sandbox(server_env={"CELLBOX_TEST_TAG": tag}) as sb:
        with pytest.raises(KeyboardInterrupt):
            # on_output runs in the loop thread; the signal hits this (main) thread, which is
            # blocked in run(), as a terminal's Ctrl-C would.
            main = threading.main_thread().ident
            sb.run(SLEEPER, on_output=lambda e: signal.pthread_kill(main, signal.SIGINT))
        with _deadline(10):
            assert sb.run("x").value.repr == "'kept'"


class _deadline:
    """Fail if the block took longer than ``seconds`` (the block cannot be cancelled)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        assert time.monotonic() - self.start < self.seconds


# ---------------------------------------------------------------------------------------------
# The public API


def test_public_api_is_pinned_and_import_is_cheap():
    assert cellbox.__all__ == [
        "CellboxError",
        "Client",
        "DisplayNotification",
        "ErrorInfo",
        "EvalResult",
        "EvalStream",
        "InputRequestNotification",
        "OutputNotification",
        "Sandbox",
        "ServerGone",
        "Session",
        "Value",
        "__version__",
        "connect",
    ]
    for name in cellbox.__all__:
        assert getattr(cellbox, name) is not None
    assert cellbox.connect is connect and cellbox.EvalResult is m.EvalResult
    assert issubclass(cellbox.ServerGone, cellbox.CellboxError)
    probe = "import sys, cellbox; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('anyio', 'msgspec', 'cellbox'))))"
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + probe],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        check=True,
    ).stdout
    assert json.loads(out) == ["cellbox"]


# ---------------------------------------------------------------------------------------------
# Regressions of server bugs found from the client


def test_interrupt_sent_right_behind_its_eval_hits_it(server):
    sid = server.create(limits={"timeout": 0})
    assert server.eval(sid, "import os; os._exit(3)")["status"] == "killed"  # next eval respawns
    ev = {"jsonrpc": "2.0", "id": "e", "method": "session/eval", "params": {"session": sid, "code": "import time; time.sleep(30)"}}
    it = {"jsonrpc": "2.0", "id": "i", "method": "session/interrupt", "params": {"session": sid, "requestId": "e"}}
    server.write(json.dumps(ev) + "\n" + json.dumps(it) + "\n")
    try:
        assert server.reply("i")["result"] == {"interrupted": True}
        assert server.reply("e", timeout=5)["result"]["status"] == "interrupted"
    finally:
        server.call("session/close", {"session": sid})
