"""The methods of PROTOCOL.md sections 3-7 as handlers over the session ``Registry``.

Each handler takes the decoded params and the request and returns the result (a Struct, a
dict or None); failures are ``CellboxError``s, which the server turns into error replies.
The table is built from ``messages.METHODS``: a method ``group/nameInCamel`` is handled by
``group_name_in_camel`` here or on the MCP face (``tools/*``); a method without a handler is
an error at start, not at the first request. ``session/eval`` is started by the server itself
(it must be queued before any await); its entry here only answers evals after ``shutdown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from cellbox import __version__
from cellbox.protocol import channel as ch
from cellbox.protocol import errors
from cellbox.protocol import messages as m
from cellbox.supervisor import files
from cellbox.supervisor.registry import Registry

Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass
class Facts:
    """What ``initialize`` reports about the server that the registry does not know."""

    framing: Callable[[], str | None]
    zygote: Callable[[], bool]
    on_shutdown: Callable[[], None]
    isolation: Callable[[], dict] = dict


def handler_name(method: str) -> str:
    """``session/isComplete`` -> ``session_is_complete``."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", method).replace("/", "_").lower()


def table(*providers: Any) -> dict[str, Handler]:
    """The handler of every method in ``messages.METHODS``, from the first provider that has it."""
    out: dict[str, Handler] = {}
    for method in m.METHODS:
        name = handler_name(method)
        found = next((getattr(p, name) for p in providers if hasattr(p, name)), None)
        if found is None:
            raise RuntimeError(f"no handler for {method} ({name})")
        out[method] = found
    return out


class Methods:
    def __init__(self, registry: Registry, facts: Facts) -> None:
        self.registry = registry
        self.facts = facts

    async def initialize(self, params: m.InitializeParams, req: Any) -> m.InitializeResult:
        version = params.protocol_version
        if version not in m.MCP_VERSIONS:
            version = m.MCP_VERSIONS[-1]
        o = self.registry.options
        return m.InitializeResult(
            protocol_version=version,
            server_info=m.ServerInfo(name="cellbox", version=__version__),
            capabilities={
                "tools": {},
                "cellbox": {
                    "protocol": m.PROTOCOL_VERSION,
                    "methods": sorted(m.METHODS),
                    "framing": self.facts.framing() or "ndjson",
                    "zygote": self.facts.zygote(),
                    "isolation": self.facts.isolation(),
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
        self.facts.on_shutdown()
        await self.registry.close_all()
        return None

    async def server_stats(self, params: Any, req: Any) -> m.ServerStats:
        r = self.registry
        return r.stats.snapshot(len(r.open_sessions()))

    async def session_create(self, params: m.SessionCreateParams, req: Any) -> m.SessionCreateResult:
        session = await self.registry.create_session(params)
        child = session.child
        assert child is not None
        return m.SessionCreateResult(session=session.id, pid=child.pid, python=child.python, workdir=session.workdir)

    async def session_write_file(self, params: m.WriteFileParams, req: Any) -> m.WriteFileResult:
        session = self.registry.session(params.session)
        return await session.in_workdir(files.write, params, session.file_owner)

    async def session_read_file(self, params: m.ReadFileParams, req: Any) -> m.ReadFileResult:
        return await self.registry.session(params.session).in_workdir(files.read, params)

    async def session_list_files(self, params: m.ListFilesParams, req: Any) -> m.ListFilesResult:
        return await self.registry.session(params.session).in_workdir(files.listing, params)

    async def session_list(self, params: Any, req: Any) -> m.SessionListResult:
        return m.SessionListResult(sessions=[session.info() for session in self.registry.open_sessions()])

    async def session_close(self, params: m.SessionParams, req: Any) -> None:
        r = self.registry
        await r.close_session(r.session(params.session))
        return None

    async def session_restart(self, params: m.SessionParams, req: Any) -> m.SessionRestartResult:
        session = self.registry.session(params.session)
        child = await session.restart()
        return m.SessionRestartResult(session=session.id, pid=child.pid)

    async def session_interrupt(self, params: m.SessionInterruptParams, req: Any) -> m.SessionInterruptResult:
        r = self.registry
        session = r.session(params.session)
        ev = None
        if params.request_id is not None:
            found = r.find_eval(params.request_id)
            if found is None or found[0] is not session:
                return m.SessionInterruptResult(interrupted=False)
            ev = found[1]
        return m.SessionInterruptResult(interrupted=session.interrupt(ev))

    async def session_eval(self, params: m.EvalParams, req: Any) -> Any:
        raise errors.ShuttingDown()  # the server starts evals itself; this is reached after shutdown

    async def session_input(self, params: m.InputParams, req: Any) -> None:
        r = self.registry
        session = r.session(params.session)
        found = r.find_eval(params.request_id)
        if found is None or found[0] is not session or not session.send_input(found[1], params.text, params.prompt_id):
            which = "" if params.prompt_id is None else f" (prompt {params.prompt_id})"
            raise errors.InvalidParams(data=f"no running eval {params.request_id!r} waits for input{which}")
        return None

    async def session_complete(self, params: m.CodeCursorParams, req: Any) -> m.CompleteResult:
        session = self.registry.session(params.session)
        reply = await session.editor_request(ch.Complete, params.code, params.cursor)
        if reply is None:
            return m.CompleteResult(matches=[], cursor_start=params.cursor, cursor_end=params.cursor)
        return m.CompleteResult(matches=reply.matches, cursor_start=reply.cursor_start, cursor_end=reply.cursor_end)

    async def session_inspect(self, params: m.CodeCursorParams, req: Any) -> m.InspectResult:
        session = self.registry.session(params.session)
        reply = await session.editor_request(ch.Inspect, params.code, params.cursor)
        if reply is None:
            return m.InspectResult(found=False)
        return m.InspectResult(found=reply.found, data=reply.data)

    async def session_is_complete(self, params: m.IsCompleteParams, req: Any) -> m.IsCompleteResult:
        if params.session is not None:
            self.registry.session(params.session)
        from cellbox.supervisor.completeness import is_complete

        status, indent = is_complete(params.code)
        return m.IsCompleteResult(status=status, indent=indent)  # type: ignore[arg-type]
