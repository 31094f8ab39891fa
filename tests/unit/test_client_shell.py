"""The client's anyio shell against a scripted fake server over memory streams (no process)."""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import pytest

from cellbox.client import ServerGone, connect
from cellbox.protocol import messages as m
from cellbox.protocol.errors import SessionNotFound

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class FakeServer:
    """The server's ends of two memory streams: read the client's messages, write lines."""

    def __init__(self) -> None:
        self.to_client, self.client_receive = anyio.create_memory_object_stream[bytes](math.inf)
        self.client_send, self.from_client = anyio.create_memory_object_stream[bytes](math.inf)
        self._buffer = b""

    @property
    def streams(self) -> Any:
        return self.client_receive, self.client_send

    async def read(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            self._buffer += await self.from_client.receive()
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def write(self, **message: Any) -> None:
        self.to_client.send_nowait(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")

    def output(self, request_id: int, text: str) -> None:
        params = {"session": "s1", "requestId": request_id, "stream": "stdout", "text": text}
        self.write(method="session/output", params=params)

    async def until_closed(self) -> None:
        """Wait until the client closes its side, then end the output (as a server exits)."""
        try:
            while True:
                await self.from_client.receive()
        except anyio.EndOfStream:
            self.to_client.close()


async def test_replies_out_of_order_and_eval_output_reach_their_callers():
    server = FakeServer()
    results: dict[str, Any] = {}
    async with anyio.create_task_group() as tg, connect(streams=server.streams, exit_timeout=5) as client:

        async def ping() -> None:
            results["ping"] = await client.ping()

        async def list_sessions() -> None:
            results["list"] = await client.list_sessions()

        tg.start_soon(ping)
        tg.start_soon(list_sessions)
        first, second = await server.read(), await server.read()
        by_method = {first["method"]: first["id"], second["method"]: second["id"]}
        server.write(id=by_method["session/list"], result={"sessions": []})
        server.write(id=by_method["ping"], result=None)

        session = client.session("s1")
        async with session.stream("print(1)") as events:
            request = await server.read()
            assert request["method"] == "session/eval" and request["params"]["code"] == "print(1)"
            server.output(request["id"], "1\n")
            server.write(id=request["id"], result={"status": "ok", "executionCount": 1})
            seen = [event async for event in events]
        assert [type(e) for e in seen] == [m.OutputNotification, m.EvalResult]
        assert seen[0].text == "1\n" and events.result is seen[1]
        tg.start_soon(server.until_closed)
    assert results == {"ping": None, "list": []}


async def test_error_replies_raise_their_class_and_an_abandoned_eval_is_cancelled():
    server = FakeServer()
    async with anyio.create_task_group() as tg, connect(streams=server.streams, exit_timeout=5) as client:
        session = client.session("nope")

        async def close() -> None:
            with pytest.raises(SessionNotFound):
                await session.close()

        tg.start_soon(close)
        request = await server.read()
        server.write(id=request["id"], error={"code": SessionNotFound.code, "message": "no such session"})

        async with session.stream("while True: pass") as events:
            request = await server.read()
            server.output(request["id"], "started\n")
            async for _ in events:
                break  # leaving early must cancel the eval on the server
        assert await server.read() == {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request["id"]}}
        tg.start_soon(server.until_closed)


async def test_the_end_of_the_servers_output_fails_every_pending_call():
    server = FakeServer()
    failures: list[BaseException] = []
    async with connect(streams=server.streams, exit_timeout=5) as client:

        async def call(method: str) -> None:
            try:
                await client.call(method)
            except ServerGone as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "ping")
            tg.start_soon(call, "session/list")
            await server.read()
            await server.read()
            server.to_client.close()  # the server's output ends with two calls unanswered
        assert client.closed
        with pytest.raises(ServerGone):
            await client.ping()
    assert sorted(str(e) for e in failures) == [
        "the cellbox server closed its output; no reply to `ping` can come",
        "the cellbox server closed its output; no reply to `session/list` can come",
    ]
