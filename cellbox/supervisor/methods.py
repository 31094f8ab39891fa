"""The methods of PROTOCOL.md sections 3-7 as handlers over the ``Server``.

Each handler takes the decoded params and the request and returns the result (a Struct, a
dict or None); failures are ``CellboxError``s, which the server turns into error replies.
``session/eval`` is started by the server itself (it must be queued before any await); its
entry here only answers evals that arrive after ``shutdown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from cellbox import __version__
from cellbox.protocol import channel as ch
from cellbox.protocol import errors
from cellbox.protocol import messages as m

if TYPE_CHECKING:
    from cellbox.supervisor.server import Server

Handler = Callable[[Any, Any], Awaitable[Any]]


class Methods:
    def __init__(self, server: Server) -> None:
        self.server = server

    def table(self) -> dict[str, Handler]:
        mcp = self.server.mcp
        return {
            "initialize": self.initialize,
            "ping": self.ping,
            "shutdown": self.shutdown,
            "server/stats": self.server_stats,
            "session/create": self.create,
            "session/list": self.list,
            "session/close": self.close,
            "session/restart": self.restart,
            "session/interrupt": self.interrupt,
            "session/eval": self.eval,
            "session/input": self.input,
            "session/complete": self.complete,
            "session/inspect": self.inspect,
            "session/isComplete": self.is_complete,
            "tools/list": mcp.tools_list,
            "tools/call": mcp.tools_call,
        }

    async def initialize(self, params: m.InitializeParams, req: Any) -> m.InitializeResult:
        s = self.server
        version = params.protocol_version
        if version not in m.MCP_VERSIONS:
            version = m.MCP_VERSIONS[-1]
        o = s.options
        return m.InitializeResult(
            protocol_version=version,
            server_info=m.ServerInfo(name="cellbox", version=__version__),
            capabilities={
                "tools": {},
                "cellbox": {
                    "protocol": m.PROTOCOL_VERSION,
                    "methods": s.methods,
                    "framing": s.framer.kind or "ndjson",
                    "zygote": s.zygote is not None and s.zygote.enabled,
                    "limits": {
                        "timeout": o.timeout,
                        "killGrace": o.kill_grace,
                        "memoryMb": o.memory_mb,
                        "cpuSeconds": o.cpu_seconds,
                        "outputBytes": o.output_bytes,
                        "maxSessions": o.max_sessions,
                    },
                },
            },
            instructions=(
                "Run Python with the `python` tool. Variables persist between calls in the same "
                "session; top-level `await` works. Every call has a timeout; the result says whether "
                "the variables survived (stateLost)."
            ),
        )

    async def ping(self, params: Any, req: Any) -> dict:
        return {}

    async def shutdown(self, params: Any, req: Any) -> None:
        s = self.server
        s.shutting_down = True
        await s.close_all()
        return None

    async def server_stats(self, params: Any, req: Any) -> m.ServerStats:
        s = self.server
        return s.stats.snapshot(len(s.open_sessions()))

    async def create(self, params: m.SessionCreateParams, req: Any) -> m.SessionCreateResult:
        s = self.server
        session = await s.create_session(params)
        child = session.child
        assert child is not None
        return m.SessionCreateResult(session=session.id, pid=child.pid, python=child.python)

    async def list(self, params: Any, req: Any) -> m.SessionListResult:
        return m.SessionListResult(sessions=[session.info() for session in self.server.open_sessions()])

    async def close(self, params: m.SessionParams, req: Any) -> None:
        s = self.server
        await s.close_session(s.session(params.session))
        return None

    async def restart(self, params: m.SessionParams, req: Any) -> m.SessionRestartResult:
        s = self.server
        session = s.session(params.session)
        child = await session.restart()
        return m.SessionRestartResult(session=session.id, pid=child.pid)

    async def interrupt(self, params: m.SessionInterruptParams, req: Any) -> m.SessionInterruptResult:
        s = self.server
        session = s.session(params.session)
        pe = None
        if params.request_id is not None:
            found = s.find_eval(params.request_id)
            if found is None or found[0] is not session:
                return m.SessionInterruptResult(interrupted=False)
            pe = found[1]
        return m.SessionInterruptResult(interrupted=session.interrupt(pe))

    async def eval(self, params: m.EvalParams, req: Any) -> Any:
        raise errors.ShuttingDown()  # the server starts evals itself; this is reached after shutdown

    async def input(self, params: m.InputParams, req: Any) -> None:
        s = self.server
        session = s.session(params.session)
        found = s.find_eval(params.request_id)
        if found is None or found[0] is not session or not session.send_input(found[1], params.text):
            raise errors.InvalidParams(data=f"no running eval {params.request_id!r} waits for input")
        return None

    async def complete(self, params: m.CodeCursorParams, req: Any) -> m.CompleteResult:
        s = self.server
        session = s.session(params.session)
        reply = await session.editor_request(ch.Complete, params.code, params.cursor)
        if reply is None:
            return m.CompleteResult(matches=[], cursor_start=params.cursor, cursor_end=params.cursor)
        return m.CompleteResult(matches=reply.matches, cursor_start=reply.cursor_start, cursor_end=reply.cursor_end)

    async def inspect(self, params: m.CodeCursorParams, req: Any) -> m.InspectResult:
        s = self.server
        session = s.session(params.session)
        reply = await session.editor_request(ch.Inspect, params.code, params.cursor)
        if reply is None:
            return m.InspectResult(found=False)
        return m.InspectResult(found=reply.found, data=reply.data)

    async def is_complete(self, params: m.IsCompleteParams, req: Any) -> m.IsCompleteResult:
        s = self.server
        if params.session is not None:
            s.session(params.session)
        from cellbox.supervisor.completeness import is_complete

        status, indent = is_complete(params.code)
        return m.IsCompleteResult(status=status, indent=indent)  # type: ignore[arg-type]
