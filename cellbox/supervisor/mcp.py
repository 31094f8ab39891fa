"""The MCP face: ``tools/list`` and ``tools/call`` for ``python``, ``python_reset``,
``python_sessions``, ``write_file`` and ``read_file``.

Sessions are addressed by name (created on first use). A ``python`` call is an ordinary eval
on the session's queue; its text content is what a person (or a model) reads: printed output,
then the value, then the traceback, then a status line when the outcome was not ``ok``. With
``_meta.progressToken`` the server sends ``notifications/progress`` for output chunks and a
heartbeat every few seconds, so client-side request timeouts do not fire on long runs.
"""

from __future__ import annotations

from typing import Any, Callable

import anyio
import msgspec

from cellbox.protocol import errors
from cellbox.protocol import messages as m
from cellbox.supervisor import files
from cellbox.supervisor.registry import Registry
from cellbox.supervisor.session import Session

Notify = Callable[[str, Any], None]

HEARTBEAT = 5.0
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _schema(tp: Any) -> dict[str, Any]:
    """An object schema with its definitions inlined under ``$defs`` (MCP wants ``type: object``)."""
    (ref,), defs = msgspec.json.schema_components([tp], ref_template="#/$defs/{name}")
    name = ref["$ref"].rsplit("/", 1)[1]
    out = dict(defs.pop(name))
    if defs:
        out["$defs"] = defs
    return out


def _input_schema(tp: Any) -> dict[str, Any]:
    """A tool's input schema in the form every agent framework reads: each optional input is
    ``nullable: true`` (smolagents treats only those as optional), and ``X | None`` is ``X``
    with ``nullable`` instead of an ``anyOf`` (which some frameworks turn into a string)."""
    out = _schema(tp)
    required = set(out.get("required", ()))
    for key, prop in out["properties"].items():
        if key in required:
            continue
        options = prop.get("anyOf")
        if options and len(options) == 2 and {"type": "null"} in options:
            (kept,) = [o for o in options if o != {"type": "null"}]
            prop = {**kept, **{k: v for k, v in prop.items() if k != "anyOf"}}
        out["properties"][key] = {**prop, "nullable": True}
    return out


def _eval_output_schema() -> dict[str, Any]:
    out = _schema(m.EvalResult)
    out["properties"] = {**out["properties"], "summary": {
        "type": "string",
        "description": "What the text content says: output, value, traceback and whether the variables survived.",
    }}
    return out


TOOLS: list[dict[str, Any]] = [
    {
        "name": "python",
        "title": "Run Python",
        "description": (
            "Run Python code in a persistent session and return its printed output, the value of "
            "the last expression and any traceback. Variables, imports and functions persist "
            "between calls in the same session; top-level `await` works. Use `timeout` (seconds) "
            "for long work; the result says whether the variables survived a timeout. The code "
            "runs in the session's work directory: files written there with `write_file` can be "
            "opened by relative path, and files it writes there can be read with `read_file`."
        ),
        "inputSchema": _input_schema(m.PythonToolArgs),
        "outputSchema": _eval_output_schema(),
    },
    {
        "name": "python_reset",
        "title": "Reset a Python session",
        "description": "Start the named session afresh: an empty namespace.",
        "inputSchema": _input_schema(m.SessionToolArgs),
    },
    {
        "name": "python_sessions",
        "title": "List Python sessions",
        "description": "The sessions, their state and how many cells each has run.",
        "inputSchema": {"type": "object", "properties": {}},
        "outputSchema": _schema(m.SessionListResult),
    },
    {
        "name": "write_file",
        "title": "Write a file for Python",
        "description": ("Write a file into the session's work directory (the code's current directory), "
                        "as `text` or `base64`; `path` is relative to it. Parent directories are made."),
        "inputSchema": _input_schema(m.WriteFileToolArgs),
        "outputSchema": _schema(m.WriteFileResult),
    },
    {
        "name": "read_file",
        "title": "Read a file Python wrote",
        "description": ("Read a file from the session's work directory; `path` is relative to it. Text "
                        "comes back as text, other bytes as base64; `maxBytes` (default 1 MiB) bounds it."),
        "inputSchema": _input_schema(m.ReadFileToolArgs),
        "outputSchema": _schema(m.ReadFileResult),
    },
]

_decoders = {
    "python": msgspec.convert,
}


def render_text(result: m.EvalResult, placeholder: str = "(no output)") -> str:
    """The eval result as a person reads it: output, displays without an image (their
    ``text/plain``), value, traceback, status; ``placeholder`` if there is none of these."""
    parts: list[str] = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append(result.stderr.rstrip("\n"))
    for display in result.displays or []:
        if not any(mime in display.data for mime in IMAGE_MIMES):  # images become image items
            text = display.data.get("text/plain")
            parts.append(text if isinstance(text, str) else f"[display: {', '.join(sorted(display.data))}]")
    if result.value is not None:
        parts.append(result.value.repr)
    if result.error is not None:
        parts.append(result.error.traceback.rstrip("\n") or f"{result.error.type}: {result.error.message}")
    if result.status != "ok":
        parts.append(_status_line(result))
    return "\n".join(parts) if parts else placeholder


def _status_line(result: m.EvalResult) -> str:
    if result.status == "killed":
        return (
            f"[cellbox: the session's interpreter was killed ({result.cause}); it has been replaced, "
            "so all variables and imports are gone]"
        )
    if result.status == "timeout":
        return "[cellbox: the code hit its timeout and was stopped; variables are kept]"
    if result.status == "interrupted":
        return "[cellbox: the code was interrupted; variables are kept]"
    return "[cellbox: the code raised an exception; variables are kept]"


class McpFace:
    def __init__(self, registry: Registry, notify: Notify) -> None:
        self.registry = registry
        self.notify = notify

    async def tools_list(self, params: Any, req: Any) -> dict[str, Any]:
        return {"tools": TOOLS}

    async def tools_call(self, params: m.ToolCallParams, req: Any) -> dict[str, Any]:
        args = params.arguments or {}
        if params.name == "python":
            a = _convert(args, m.PythonToolArgs)
            return await self._python(a, params.meta, req)
        if params.name == "python_reset":
            a = _convert(args, m.SessionToolArgs)
            session = await self._session(a.session)
            await session.restart()
            return {"content": [_text(f"session {a.session!r} reset: empty namespace")], "isError": False}
        if params.name == "python_sessions":
            _convert(args, m.EmptyParams)
            listing = m.SessionListResult(sessions=[s.info() for s in self.registry.open_sessions()])
            lines = [
                f"{i.name or i.session}: {i.state}, {i.execution_count} cells, pid {i.pid}" for i in listing.sessions
            ]
            return {
                "content": [_text("\n".join(lines) or "no sessions")],
                "structuredContent": msgspec.to_builtins(listing),
                "isError": False,
            }
        if params.name in ("write_file", "read_file"):
            try:
                return await self._file(params.name, args)
            except errors.InvalidParams as exc:  # a bad path: the model reads why and can retry
                return {"content": [_text(f"[cellbox: {exc.data}]")], "isError": True}
        raise errors.InvalidParams(data=f"unknown tool {params.name!r}")

    async def _file(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        if tool == "write_file":
            w = _convert(args, m.WriteFileToolArgs)
            session = await self._session(w.session)
            params = m.WriteFileParams(session=session.id, path=w.path, text=w.text, base64=w.base64)
            wrote = await session.in_workdir(files.write, params, session.file_owner)
            return {"content": [_text(f"wrote {wrote.size} bytes to {wrote.path}")],
                    "structuredContent": msgspec.to_builtins(wrote), "isError": False}
        r = _convert(args, m.ReadFileToolArgs)
        session = await self._session(r.session)
        got = await session.in_workdir(files.read, m.ReadFileParams(session=session.id, path=r.path,
                                                                     max_bytes=r.max_bytes))
        more = f"\n[cellbox: truncated: {got.size} bytes in all]" if got.truncated else ""
        body = got.text if got.text is not None else f"(binary, {got.size} bytes; base64 in structuredContent)"
        return {"content": [_text(body + more)], "structuredContent": msgspec.to_builtins(got), "isError": False}

    async def _session(self, name: str) -> Session:
        session = self.registry.by_name(name)
        if session is not None:
            return session
        return await self.registry.create_session(m.SessionCreateParams(name=name))

    async def _python(self, a: m.PythonToolArgs, meta: dict[str, Any] | None, req: Any) -> dict[str, Any]:
        session = await self._session(a.session)
        token = (meta or {}).get("progressToken")
        progress = _Progress(self.notify, token) if token is not None else None
        params = m.EvalParams(session=session.id, code=a.code, timeout=a.timeout)
        pe = self.registry.submit_eval(
            session, ("mcp", req.id), req.id, params, progress.output if progress else None, notify=False
        )
        finished = anyio.Event()
        pe.on_answer.append(lambda ev: finished.set())
        try:
            if progress is None:
                await finished.wait()
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(progress.heartbeat, pe)
                    await finished.wait()
                    tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            session.interrupt(pe)  # cancelling the call really stops the code
            raise
        result = pe.result
        assert result is not None
        images = []
        for display in result.displays or []:
            mime = next((x for x in IMAGE_MIMES if x in display.data), None)
            if mime is not None:
                images.append({"type": "image", "data": display.data[mime], "mimeType": mime})
        text = render_text(result, placeholder="" if images else "(no output)")
        # No placeholder beside an image, and images first when there is no text: some
        # frameworks keep only the first content item.
        content = ([_text(text)] if text else []) + images
        structured = msgspec.to_builtins(result)
        structured["summary"] = render_text(result)  # for frameworks that show only this
        return {"content": content, "structuredContent": structured, "isError": result.status != "ok"}


class _Progress:
    def __init__(self, notify: Notify, token: Any) -> None:
        self.notify = notify
        self.token = token
        self.count = 0

    def send(self, message: str) -> None:
        self.count += 1
        self.notify(
            "notifications/progress",
            {"progressToken": self.token, "progress": self.count, "message": message},
        )

    def output(self, stream: str, text: str) -> None:
        self.send(text)

    async def heartbeat(self, pe: Any) -> None:
        while True:
            await anyio.sleep(HEARTBEAT)
            self.send("running")


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _convert(args: dict[str, Any], tp: type) -> Any:
    """The tool's arguments; an optional input given as null takes its default."""
    try:
        return msgspec.convert({k: v for k, v in args.items() if v is not None}, tp)
    except msgspec.ValidationError as exc:
        raise errors.InvalidParams(data=str(exc)) from None
