"""The private supervisor-child channel: a tagged union of msgpack messages, length-prefixed.

Theory of operation: the channel is a pair of pipes the child keeps on high, non-inheritable
file descriptors, so nothing user code prints or closes touches it. Each frame is a 4-byte
big-endian length followed by one msgpack-encoded message; ``ChannelReader`` is sans-IO: feed
it bytes, take whole messages out. Invariants: a frame never exceeds ``MAX_FRAME`` (a larger
length means the stream is corrupt and is reported as ``ChannelError``); messages of one
direction arrive in the order they were written.

Output of user code does not travel here: fds 1 and 2 of the child are pipes the supervisor
reads directly, so C-level and subprocess output arrive too. Only structured events (displays,
input requests, results) use the channel.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from cellbox.protocol.messages import DetectionPolicy, Display, ErrorInfo, Limits, Value, Warning

MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


#: A contained child's wait status, as its init writes it to the status pipe.
STATUS = struct.Struct("<i")


class ChannelError(Exception):
    """The channel carried bytes that are not a valid frame or message."""


class Msg(msgspec.Struct, kw_only=True, tag_field="t", array_like=False, omit_defaults=True):
    """Base of channel messages; ``t`` names the type."""


# --- supervisor -> child ----------------------------------------------------------------------


class Configure(Msg, tag="configure"):
    """The first message to a new child: options it applies before answering ``Hello``."""

    session: str = ""
    detection: DetectionPolicy | None = None
    ast_cache_size: int | None = None
    limits: Limits | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None


class Exec(Msg, tag="exec"):
    """Run one cell. ``id`` is the supervisor's serial for this eval, echoed in replies."""

    id: int
    code: str
    execution_count: int
    silent: bool = False
    allow_stdin: bool = False
    timeout: float | None = None
    repr_limit: int = 1 << 20


class Interrupt(Msg, tag="interrupt"):
    """Stop cell ``id`` (an addressed interrupt). The supervisor writes it, then sends SIGINT
    only as a wake-up for code that does not return to the loop; the child acts on it only
    while cell ``id`` is running or about to start, so a late one never stops another cell."""

    id: int


class InputReply(Msg, tag="input"):
    """The answer to an ``InputRequest``; ``text`` None means end of input."""

    text: str | None


class Complete(Msg, tag="complete"):
    id: int
    code: str
    cursor: int


class Inspect(Msg, tag="inspect"):
    id: int
    code: str
    cursor: int


class Strict(msgspec.Struct, frozen=True):
    """What a strict session's child is confined to: its unprivileged ids (outside), its
    work directory, and whether it keeps the host's network."""

    uid: int
    gid: int
    workdir: str
    network: bool = False


class Spawn(Msg, tag="spawn"):
    """To the zygote: fork a session child with this environment. The message carries the
    child's stdin, stdout, stderr and channel descriptors and the write end of its status
    pipe as SCM_RIGHTS. ``contain``: in a PID namespace of its own, with an init that
    writes the child's wait status to the status pipe. ``argv``: the child then executes
    this command (a fresh interpreter) instead of running on as a fork of the zygote."""

    env: dict[str, str]
    contain: bool = False
    argv: list[str] | None = None
    cgroup: list[str] = []  # ``cgroup.procs`` files the child joins before it runs
    strict: Strict | None = None  # confine it (``contain`` too): see ``cellbox.child.strict``


# --- child -> supervisor ----------------------------------------------------------------------


class Hello(Msg, tag="hello"):
    """The child applied ``Configure`` and listens; ``error`` says why it could not start."""

    pid: int
    python: str
    error: str | None = None


class Spawned(Msg, tag="spawned"):
    """From the zygote: the pid of the child it forked (0: the fork failed), which is the
    pid of its init if it is ``contained``. The zygote's first message is ``Spawned`` with
    its own pid."""

    pid: int
    contained: bool = False
    error: str | None = None  # why it could not fork (pid 0)


class DisplayEvent(Msg, tag="display"):
    id: int | None
    display: Display


class InputRequest(Msg, tag="input_request"):
    id: int
    prompt: str
    password: bool = False


class Done(Msg, tag="done"):
    """A cell finished. ``stopped`` says whether an interrupt or the timeout reached it;
    ``fatal`` asks the supervisor to replace the child (e.g. ``"memory"`` after a MemoryError
    under a memory limit: the process may be unable to allocate again)."""

    id: int
    execution_count: int
    value: Value | None = None
    error: ErrorInfo | None = None
    warnings: list[Warning] = []
    stopped: str | None = None
    fatal: str | None = None
    duration_ms: float = 0.0
    counters: dict[str, int] = {}


class CompleteReply(Msg, tag="complete_reply"):
    id: int
    matches: list[str]
    cursor_start: int
    cursor_end: int


class InspectReply(Msg, tag="inspect_reply"):
    id: int
    found: bool
    data: dict[str, Any] = {}


ToChild = Configure | Exec | Interrupt | InputReply | Complete | Inspect | Spawn
ToSupervisor = Hello | DisplayEvent | InputRequest | Done | CompleteReply | InspectReply | Spawned

_encoder = msgspec.msgpack.Encoder()
_to_child = msgspec.msgpack.Decoder(ToChild)
_to_supervisor = msgspec.msgpack.Decoder(ToSupervisor)


def encode(msg: Msg) -> bytes:
    """One frame: length prefix and msgpack body, ready for a single ``write``."""
    body = _encoder.encode(msg)
    return _HEADER.pack(len(body)) + body


class ChannelReader:
    """Sans-IO frame reader for one direction of the channel.

    ``feed(data)`` buffers bytes; ``messages()`` returns every whole message decoded so far.
    Raises ``ChannelError`` on a frame that is too large or does not decode.
    """

    def __init__(self, *, to_child: bool) -> None:
        self._decoder = _to_child if to_child else _to_supervisor
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise ChannelError(f"frame of {n} bytes exceeds {MAX_FRAME}")
            if len(buf) - pos - 4 < n:
                break
            try:
                out.append(self._decoder.decode(buf[pos + 4 : pos + 4 + n]))
            except msgspec.DecodeError as exc:
                raise ChannelError(str(exc)) from None
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out
