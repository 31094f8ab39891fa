"""``cellbox serve`` as an MCP server, driven by the official ``mcp`` Python SDK.

The SDK spawns the server over stdio exactly as an MCP host (Claude Desktop, an agent
framework) does, and validates every message against MCP's schema, including each
``structuredContent`` against the tool's ``outputSchema``. Written for mcp 1.x (the test
extra's floor) and also run with 2.x, whose models spell fields in snake_case (``attr``) and
which sends ``notifications/cancelled`` by itself when a call is abandoned.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import uuid
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import anyio
import pytest

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, types  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from tests.harness import assert_no_leftovers  # noqa: E402

try:
    from mcp.shared.exceptions import McpError  # mcp 1.x
except ImportError:  # mcp 2.x
    from mcp.shared.exceptions import MCPError as McpError  # type: ignore[no-redef]

MCP_MAJOR = int(version("mcp").split(".")[0])

pytestmark = pytest.mark.anyio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def tag():
    value = uuid.uuid4().hex
    yield value
    assert_no_leftovers(value)


@asynccontextmanager
async def mcp_session(tag: str, *args: str, **client: Any):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "cellbox", "serve", *args],
        env={**os.environ, "PYTHONPATH": ROOT, "CELLBOX_TEST_TAG": tag},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, **client) as session:
            yield session


def attr(obj: object, name: str):
    """A model field by its camelCase name (mcp 1.x) or its snake_case one (2.x)."""
    if hasattr(obj, name):
        return getattr(obj, name)
    return getattr(obj, re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_initialize_ping_and_tools(tag):
    async with mcp_session(tag) as session:
        init = await session.initialize()
        assert attr(init, "serverInfo").name == "cellbox"
        assert attr(init, "protocolVersion") in ("2024-11-05", "2025-03-26", "2025-06-18")
        assert init.capabilities.tools is not None
        await session.send_ping()

        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"python", "python_reset", "python_sessions", "write_file", "read_file"}
        for tool in tools.values():
            assert attr(tool, "inputSchema")["type"] == "object" and tool.description
        python = tools["python"]
        assert "code" in attr(python, "inputSchema")["properties"]
        assert attr(python, "inputSchema")["required"] == ["code"]
        assert attr(python, "outputSchema") is not None and attr(python, "outputSchema")["type"] == "object"


async def test_optional_inputs_are_nullable_and_images_come_without_a_placeholder(tag):
    """What agent frameworks need: optional inputs marked ``nullable`` (and given as null),
    a numeric timeout that stays a number, and an image-only result whose first item is the
    image (some frameworks keep only the first item)."""
    async with mcp_session(tag) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        props = attr(tools["python"], "inputSchema")["properties"]
        assert props["timeout"] == {"type": "number", "minimum": 0, "default": None, "nullable": True}
        assert props["session"]["nullable"] is True and "nullable" not in props["code"]
        ran = await session.call_tool("python", {"code": "6 * 7", "session": None, "timeout": None})
        assert text_of(ran) == "42"
        png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
        shown = await session.call_tool("python", {"code": f"display({{'image/png': {png!r}}}, raw=True)"})
        kinds = [item.type for item in shown.content]
        assert kinds == ["image"], kinds


async def test_files_go_in_and_out_of_the_work_directory(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        wrote = await session.call_tool("write_file", {"path": "data/in.txt", "text": "41"})
        assert attr(wrote, "isError") is False and attr(wrote, "structuredContent")["size"] == 2
        ran = await session.call_tool("python", {"code": "n = int(open('data/in.txt').read()) + 1\n"
                                                         "open('out.txt', 'w').write(str(n))\nn"})
        assert "42" in text_of(ran)
        got = await session.call_tool("read_file", {"path": "out.txt"})
        assert text_of(got) == "42" and attr(got, "structuredContent")["truncated"] is False
        bad = await session.call_tool("read_file", {"path": "../out.txt"})
        assert attr(bad, "isError") is True and "'..'" in text_of(bad)


async def test_python_keeps_state_and_reports_errors(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        first = await session.call_tool("python", {"code": "x = 41"})
        assert attr(first, "isError") is False
        second = await session.call_tool("python", {"code": "print('hi')\nx + 1"})
        assert attr(second, "isError") is False
        assert "42" in text_of(second) and "hi" in text_of(second)
        structured = attr(second, "structuredContent")
        assert structured is not None and structured["value"]["repr"] == "42"
        assert structured["status"] == "ok" and structured["stateLost"] is False

        failed = await session.call_tool("python", {"code": "1/0"})
        assert attr(failed, "isError") is True
        text = text_of(failed)
        assert "Traceback (most recent call last)" in text and "ZeroDivisionError: division by zero" in text
        assert attr(failed, "structuredContent")["error"]["type"] == "ZeroDivisionError"

        # The variables survived the error; named sessions are separate.
        assert "41" in text_of(await session.call_tool("python", {"code": "x"}))
        other = await session.call_tool("python", {"code": "x", "session": "other"})
        assert attr(other, "isError") is True and "NameError" in text_of(other)


async def test_reset_and_sessions_tools(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        await session.call_tool("python", {"code": "y = 1"})
        listing = await session.call_tool("python_sessions", {})
        assert attr(listing, "isError") is False and "default" in text_of(listing)
        (info,) = attr(listing, "structuredContent")["sessions"]
        assert info["name"] == "default" and info["executionCount"] == 1 and info["state"] == "idle"

        reset = await session.call_tool("python_reset", {})
        assert attr(reset, "isError") is False
        after = await session.call_tool("python", {"code": "y"})
        assert attr(after, "isError") is True and "NameError" in text_of(after)


async def test_unknown_tool_is_invalid_params(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        with pytest.raises(McpError) as info:
            await session.call_tool("no_such_tool", {})
        assert info.value.error.code == -32602


async def test_displays_become_image_content_or_text(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        code = f"display({{'image/png': {PNG!r}}}, raw=True)\ndisplay({{'shown': 'as text'}})"
        result = await session.call_tool("python", {"code": code})
        images = [c for c in result.content if isinstance(c, types.ImageContent)]
        assert len(images) == 1 and attr(images[0], "mimeType") == "image/png" and images[0].data == PNG
        assert "{'shown': 'as text'}" in text_of(result) and PNG not in text_of(result)


async def test_progress_for_a_slow_cell_that_prints(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        messages: list[str | None] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            messages.append(message)

        code = "import asyncio\nfor i in range(3):\n    print(f'step {i}', flush=True)\n    await asyncio.sleep(0.05)\n"
        result = await session.call_tool("python", {"code": code}, progress_callback=progress)
        assert attr(result, "isError") is False
        assert "step 2" in text_of(result)
        streamed = "".join(m for m in messages if m)  # chunks may coalesce under load
        assert "step 0\nstep 1\nstep 2\n" in streamed


async def test_cancelled_call_stops_the_code_and_frees_the_session(tag):
    async with mcp_session(tag) as session:
        await session.initialize()
        await session.call_tool("python", {"code": "x = 41"})
        started = anyio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            if message and "started" in message:
                started.set()

        # mcp 1.x does not send notifications/cancelled when the caller is cancelled (2.x
        # does): the test sends it, naming the id the SDK will use (it counts from 0).
        request_id = getattr(session, "_request_id", None)
        code = "import time\nprint('started', flush=True)\ntime.sleep(60)"
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await session.call_tool("python", {"code": code}, progress_callback=progress)

                tg.start_soon(call)
                await started.wait()
                if MCP_MAJOR < 2:
                    await session.send_notification(
                        types.ClientNotification(
                            types.CancelledNotification(
                                params=types.CancelledNotificationParams(requestId=request_id, reason="test")
                            )
                        )
                    )
                tg.cancel_scope.cancel()
            # The session is free again at once, with its variables.
            with anyio.fail_after(10):
                again = await session.call_tool("python", {"code": "x + 1"})
        assert attr(again, "isError") is False and attr(again, "structuredContent")["value"]["repr"] == "42"


def _rejected(record: logging.LogRecord) -> bool:
    """A log record of the SDK turning away a server notification: mcp 1.x warns that it
    failed to validate it; 2.x warns the same for a known method with bad params, and logs
    at debug level that it dropped a method it does not know."""
    text = record.getMessage()
    return "Failed to validate notification" in text or (text.startswith("dropped") and "not defined at" in text)


async def test_only_mcp_notifications_reach_an_mcp_client(tag, caplog):
    """A ``tools/call`` streams no ``session/output`` (a cellbox notification) to an MCP
    client; checked on both SDK majors, each of which reports a foreign notification its own way."""
    received: list[object] = []

    async def handler(message: object) -> None:
        received.append(message)

    with caplog.at_level(logging.DEBUG):
        async with mcp_session(tag, message_handler=handler) as session:  # gets what passed
            await session.initialize()
            result = await session.call_tool("python", {"code": "print('hello')\nimport sys; print('err', file=sys.stderr)"})
            assert "hello" in text_of(result)
            await session.send_ping()  # the notifications came before this reply
    rejected = [r.getMessage()[:200] for r in caplog.records if _rejected(r)]
    assert not rejected, rejected
    assert not [m for m in received if "session/" in repr(m)], received


@pytest.mark.parametrize(
    "code, args, status, line",
    [
        ("1/0", {}, "error", "[cellbox: the code raised an exception; variables are kept]"),
        ("import time\nprint('ready', flush=True)\ntime.sleep(30)", {"timeout": 0.5}, "timeout",
         "[cellbox: the code hit its timeout and was stopped; variables are kept]"),
        ("import os\nos._exit(3)", {}, "killed",
         "[cellbox: the session's interpreter was killed (exit 3); it has been replaced, "
         "so all variables and imports are gone]"),
    ],
    ids=["error", "timeout", "killed"],
)
async def test_python_text_ends_with_the_outcome_line(tag, code, args, status, line):
    """PROTOCOL.md section 8: the text a model reads says how the call ended, not only the
    ``structuredContent`` (which a client may not show it)."""
    async with mcp_session(tag, "--kill-grace", "1") as session:
        await session.initialize()
        ok = await session.call_tool("python", {"code": "x = 1"})
        assert "[cellbox:" not in text_of(ok)
        result = await session.call_tool("python", {"code": code, **args})
        assert attr(result, "isError") is True and attr(result, "structuredContent")["status"] == status
        text = text_of(result)
        assert text.splitlines()[-1] == line, text
        assert text.count("[cellbox:") == 1
        # Frameworks that hand the model structuredContent instead of the text see it too.
        assert attr(result, "structuredContent")["summary"] == text
