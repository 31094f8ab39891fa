"""Typed params and results of every method in PROTOCOL.md, version 1.

Names are snake_case in Python and camelCase on the wire (``rename="camel"``). Params accept
unknown fields (LSP and MCP clients send extras); results list every field, ``null`` included,
so clients can rely on the shape in PROTOCOL.md section 5.

These Structs are also the payloads of the supervisor-child channel (``channel.py``) where the
two share a shape (values, errors, warnings, displays, detection policy).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

PROTOCOL_VERSION = 1

#: MCP revisions this server speaks; the newest is answered when the client's is unknown.
MCP_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18")

RequestId = int | str | None

NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


class Params(msgspec.Struct, kw_only=True, rename="camel"):
    """Base of every params Struct: camelCase, unknown fields ignored."""


class Result(msgspec.Struct, kw_only=True, rename="camel"):
    """Base of every result Struct: camelCase, every field present."""


# ---------------------------------------------------------------------------------------------
# Shared payloads (wire and channel)


class Limits(Params):
    """Per-session limits; ``None`` means the server default."""

    timeout: NonNegFloat | None = None
    memory_mb: PosInt | None = None
    cpu_seconds: PosInt | None = None
    processes: PosInt | None = None
    open_files: PosInt | None = None
    file_size_mb: NonNegInt | None = None
    output_bytes: PosInt | None = None
    #: A CPU quota for all the session's processes, in percent of one core (needs a cgroup).
    cpu_percent: PosInt | None = None


class DetectionPolicy(Params):
    """Blocking-I/O detection in async code: on/off, extra modules and names, ignored names."""

    enabled: bool = True
    extra_modules: list[str] = []
    extra_names: list[str] = []
    ignored_names: list[str] = []


class Value(Result):
    """The value of a cell's last expression: its repr and a MIME bundle."""

    repr: str
    type: str
    mime: dict[str, Any] = {}


class ErrorInfo(Result):
    """An exception raised by user code, as a person reads it."""

    type: str
    message: str
    traceback: str
    notes: list[str] = []


class Warning(Result):
    """A finding of the analysis pass (e.g. a blocking call inside async code)."""

    kind: str
    name: str
    line: int
    message: str


class Display(Result):
    """One rich output: ``{mime: value}``; binary types are base64 strings."""

    data: dict[str, Any]
    metadata: dict[str, Any] = {}


class Truncated(Result):
    """Bytes dropped by the output cap, per stream."""

    stdout: int = 0
    stderr: int = 0


# ---------------------------------------------------------------------------------------------
# Lifecycle


class InitializeParams(Params):
    client_info: dict[str, Any] | None = None
    protocol_version: str | None = None
    capabilities: dict[str, Any] | None = None


class ServerInfo(Result):
    name: str
    version: str


class InitializeResult(Result):
    protocol_version: str
    server_info: ServerInfo
    capabilities: dict[str, Any]
    instructions: str | None = None


class EmptyParams(Params):
    """Params of methods that take none (``{}``, ``[]`` or absent)."""


class ServerStats(Result):
    sessions: dict[str, int]
    evals: dict[str, int]
    kills: dict[str, int]
    children_respawned: int
    detections: dict[str, int]
    uptime_seconds: float


# ---------------------------------------------------------------------------------------------
# Sessions


class SessionCreateParams(Params):
    name: str | None = None
    cwd: str | None = None  #: an existing directory (kept); default: a fresh one, removed on close
    keep_workdir: bool = False  #: keep the fresh work directory after close
    isolation: Literal["process", "strict"] | None = None  #: None: the server's ``--isolation``
    network: bool = False  #: a strict session keeps the host's network
    env: dict[str, str] | None = None
    limits: Limits | None = None
    detection: DetectionPolicy | None = None


class SessionCreateResult(Result):
    session: str
    pid: int
    python: str
    workdir: str = ""


class SessionParams(Params):
    session: str


class SessionInfo(Result):
    session: str
    name: str | None
    state: Literal["starting", "idle", "busy", "dead"]
    pid: int | None
    execution_count: int
    created_at: str
    rss_bytes: int | None
    workdir: str = ""


class SessionListResult(Result):
    sessions: list[SessionInfo]


class SessionRestartResult(Result):
    session: str
    pid: int


class SessionInterruptParams(Params):
    session: str
    request_id: int | str | None = None


class SessionInterruptResult(Result):
    interrupted: bool


# ---------------------------------------------------------------------------------------------
# Evaluation

Status = Literal["ok", "error", "interrupted", "timeout", "killed"]


class EvalParams(Params):
    session: str
    code: str
    timeout: NonNegFloat | None = None
    allow_stdin: bool = False
    collect_output: bool = True
    silent: bool = False


class EvalResult(Result):
    status: Status
    execution_count: int | None
    value: Value | None = None
    error: ErrorInfo | None = None
    stdout: str | None = None
    stderr: str | None = None
    displays: list[Display] | None = None
    truncated: Truncated = msgspec.field(default_factory=Truncated)
    warnings: list[Warning] = []
    state_lost: bool = False
    cause: str | None = None
    duration_ms: float = 0.0


class OutputNotification(Result):
    session: str
    request_id: RequestId
    stream: Literal["stdout", "stderr"]
    text: str


class DisplayNotification(Result):
    session: str
    request_id: RequestId
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


class InputRequestNotification(Result):
    session: str
    request_id: RequestId
    prompt: str
    password: bool = False
    #: Counts the eval's prompts from 1; ``session/input`` may echo it so that a late reply
    #: cannot answer a later prompt.
    prompt_id: int = 1


class InputParams(Params):
    session: str
    request_id: int | str
    text: str
    prompt_id: int | None = None


# ---------------------------------------------------------------------------------------------
# Cancellation


class CancelRequestParams(Params):
    """``$/cancelRequest`` (LSP)."""

    id: int | str


class CancelledParams(Params):
    """``notifications/cancelled`` (MCP)."""

    request_id: int | str
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# Editor methods


class CodeCursorParams(Params):
    session: str
    code: str
    cursor: NonNegInt


class CompleteResult(Result):
    matches: list[str]
    cursor_start: int
    cursor_end: int


class InspectResult(Result):
    found: bool
    data: dict[str, Any] = {}


class IsCompleteParams(Params):
    code: str
    session: str | None = None


class IsCompleteResult(Result):
    status: Literal["complete", "incomplete", "invalid"]
    indent: str = ""


# ---------------------------------------------------------------------------------------------
# MCP


class ToolCallParams(Params):
    name: str
    arguments: dict[str, Any] | None = None
    meta: dict[str, Any] | None = msgspec.field(default=None, name="_meta")


class PythonToolArgs(Params):
    code: str
    session: str = "default"
    timeout: NonNegFloat | None = None


class SessionToolArgs(Params):
    session: str = "default"


class WriteFileToolArgs(Params):
    path: str
    text: str | None = None
    base64: str | None = None
    session: str = "default"


class ReadFileToolArgs(Params):
    path: str
    session: str = "default"
    max_bytes: PosInt | None = None


# ---------------------------------------------------------------------------------------------
# Files in a session's work directory


class WriteFileParams(Params):
    session: str
    path: str
    text: str | None = None
    base64: str | None = None
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)] | None = None


class WriteFileResult(Result):
    path: str
    size: int


class ReadFileParams(Params):
    session: str
    path: str
    max_bytes: PosInt | None = None


class ReadFileResult(Result):
    path: str
    size: int
    text: str | None
    base64: str | None
    truncated: bool


class ListFilesParams(Params):
    session: str
    path: str | None = None


class FileEntry(Result):
    path: str
    size: int
    kind: Literal["file", "dir", "link", "other"]
    mtime: str


class ListFilesResult(Result):
    entries: list[FileEntry]
    truncated: bool = False  #: more entries than one listing holds (10,000)


#: method name -> (params type, result type). The dispatcher decodes params with these; the
#: schema command documents them. A result type of ``None`` means the result is ``null``.
METHODS: dict[str, tuple[type, Any]] = {
    "initialize": (InitializeParams, InitializeResult),
    "ping": (EmptyParams, dict[str, Any]),
    "shutdown": (EmptyParams, None),
    "server/stats": (EmptyParams, ServerStats),
    "session/create": (SessionCreateParams, SessionCreateResult),
    "session/list": (EmptyParams, SessionListResult),
    "session/close": (SessionParams, None),
    "session/restart": (SessionParams, SessionRestartResult),
    "session/interrupt": (SessionInterruptParams, SessionInterruptResult),
    "session/eval": (EvalParams, EvalResult),
    "session/input": (InputParams, None),
    "session/complete": (CodeCursorParams, CompleteResult),
    "session/inspect": (CodeCursorParams, InspectResult),
    "session/isComplete": (IsCompleteParams, IsCompleteResult),
    "session/writeFile": (WriteFileParams, WriteFileResult),
    "session/readFile": (ReadFileParams, ReadFileResult),
    "session/listFiles": (ListFilesParams, ListFilesResult),
    "tools/list": (EmptyParams, dict[str, Any]),
    "tools/call": (ToolCallParams, dict[str, Any]),
}

#: notifications the server accepts (never answered).
NOTIFICATIONS: dict[str, type] = {
    "initialized": EmptyParams,
    "notifications/initialized": EmptyParams,
    "exit": EmptyParams,
    "$/cancelRequest": CancelRequestParams,
    "notifications/cancelled": CancelledParams,
}

#: notifications the server sends.
SERVER_NOTIFICATIONS: dict[str, type] = {
    "session/output": OutputNotification,
    "session/display": DisplayNotification,
    "session/inputRequest": InputRequestNotification,
}
