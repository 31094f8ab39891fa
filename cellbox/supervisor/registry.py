"""The sessions of one server: create, find, close; the evals in flight by request.

Theory of operation: the registry owns the ``Session`` objects (``session.py``) and the map of
unanswered evals by request key, which cancellation (``$/cancelRequest``,
``notifications/cancelled``, ``session/interrupt`` with a ``requestId``) and ``session/input``
look up. What it needs from the server arrives as arguments: the options, the counters, the
launcher that starts children, the outlet for notifications and the task group.

Invariants: a session is listed from the moment its create starts until it is closed; an eval
is in ``evals`` from submission until its answer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import anyio
import msgspec

from cellbox.protocol import channel as ch
from cellbox.protocol import errors
from cellbox.protocol import messages as m
from cellbox.supervisor import files
from cellbox.supervisor import machine as mc
from cellbox.supervisor import process
from cellbox.supervisor.session import Outlet, Session, Settings, Starter
from cellbox.supervisor.stats import Stats


@dataclass
class ServeOptions:
    """Server-wide defaults (``cellbox serve`` flags)."""

    framing: str | None = None
    max_sessions: int = 512
    timeout: float = 600.0
    kill_grace: float = 2.0
    memory_mb: int | None = None
    cpu_seconds: int | None = None
    output_bytes: int = 1 << 20
    ast_cache_size: int | None = None
    zygote: bool = True
    warm: int = 2
    containment: bool = True  # a PID namespace per session where the kernel allows it
    isolation: str = "process"  # the default of session/create's ``isolation``


#: The unprivileged uids (and gids) of strict sessions start here: ids no account uses.
STRICT_IDS = 1_000_000


#: What a strict session's environment keeps of the server's; the rest (tokens, keys) stays out.
STRICT_ENV = ("PATH", "LANG", "LANGUAGE", "TERM", "TZ")


def strict_env(extra: dict[str, str] | None) -> dict[str, str]:
    """A strict session's environment: a few neutral variables of the server's, a home in its
    private /tmp (caches there work; the host's is read-only), then the session's own."""
    base = {k: v for k, v in os.environ.items() if k in STRICT_ENV or k.startswith(("LC_", "CELLBOX_"))}
    return {**base, "HOME": "/tmp", **(extra or {})}


def _release_workdir(session: Session) -> None:
    """Close the session's descriptor of its work directory, removing the directory first if
    it was made for it: where it is now (a cell may have renamed it), and a symlink a cell
    put at its old path."""
    for lease in session.leases:  # its strict uid is free again once it is gone
        os.close(lease)
    session.leases.clear()
    fd, session.workdir_fd = session.workdir_fd, -1
    if fd < 0:
        return
    try:
        if session.owns_workdir:
            if os.path.islink(session.workdir):
                os.unlink(session.workdir)
            try:
                now = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                now = session.workdir
            if not now.endswith(" (deleted)"):
                shutil.rmtree(now, ignore_errors=True)
    finally:
        os.close(fd)


def request_key(request_id: Any) -> Any:
    """A hashable key for a request id that keeps its type (1 and "1" differ)."""
    return (type(request_id).__name__, request_id)


class Registry:
    def __init__(self, options: ServeOptions, stats: Stats, *, starter: Starter, outlet: Outlet) -> None:
        self.options = options
        self.stats = stats
        self.sessions: dict[str, Session] = {}
        self.evals: dict[Any, tuple[Session, mc.Eval]] = {}
        self._starter = starter
        self._outlet = outlet
        self.tg: Any = None  # the server's task group, set when it serves
        self.stopping = False  # set by the server when it begins to exit
        self._counted: set[str] = set()  # sessions counted in ``stats.created``
        self._names: dict[str, Session] = {}  # the open sessions that have a name
        self._strict_missing: list[str] | None = None

    def strict_missing(self) -> list[str]:
        """What strict sessions need and this host lacks (asked once)."""
        if self._strict_missing is None:
            self._strict_missing = process.strict_missing(self.options.zygote)
        return self._strict_missing

    def open_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if not s.closed]

    def session(self, key: str) -> Session:
        """The open session whose id, or else whose name, is ``key``; raises ``SessionNotFound``."""
        session = self.sessions.get(key) or self._names.get(key)
        if session is None or session.closed:
            raise errors.SessionNotFound(data=f"no session {key!r}")
        return session

    def by_name(self, name: str) -> Session | None:
        session = self._names.get(name)
        return session if session is not None and not session.closed else None

    def find_eval(self, request_id: Any) -> tuple[Session, mc.Eval] | None:
        """The session and eval of a ``session/eval`` request still unanswered."""
        return self.evals.get(request_key(request_id))

    def submit_eval(
        self,
        session: Session,
        key: Any,
        request_id: Any,
        params: m.EvalParams,
        sink: Callable[[str, str], None] | None = None,
        *,
        notify: bool = True,
    ) -> mc.Eval:
        """Queue an eval on ``session``; it can be cancelled by ``key`` until it is answered.
        Callbacks appended to its ``on_answer`` before it is answered are called then."""
        ev = mc.Eval(
            key=key,
            request_id=request_id,
            code=params.code,
            timeout=params.timeout,
            silent=params.silent,
            allow_stdin=params.allow_stdin,
            collect=params.collect_output,
            notify=notify,
            sink=sink,
        )
        self.evals[key] = (session, ev)
        ev.on_answer.append(self._release)
        session.submit(ev)
        return ev

    def _release(self, ev: mc.Eval) -> None:
        found = self.evals.get(ev.key)
        if found is not None and found[1] is ev:
            del self.evals[ev.key]

    async def create_session(self, params: m.SessionCreateParams) -> Session:
        """A new session with a started child. Raises ``SessionLimit``, ``SessionStartFailed``,
        ``SessionNotFound`` if a ``session/close`` closed it as it started, or ``ShuttingDown``
        if the server did (it began to exit)."""
        o = self.options
        if len(self.open_sessions()) >= o.max_sessions:
            raise errors.SessionLimit(data=f"--max-sessions is {o.max_sessions}")
        if params.name is not None and params.name in self._names:
            raise errors.InvalidParams(data=f"a session named {params.name!r} exists")
        if params.cwd is not None and not os.path.isdir(params.cwd):
            raise errors.SessionStartFailed(data=f"cwd {params.cwd!r} is not a directory")
        strict = None
        lease = -1
        if (params.isolation or o.isolation) == "strict":
            missing = self.strict_missing()
            if missing:
                raise errors.SessionStartFailed(data=f"strict isolation needs: {'; '.join(missing)}")
            uid, lease = process.lease_id(STRICT_IDS)
        # A fresh one is named after this server, so that its sentinel can remove it if the
        # server dies before it could (a kept one is not).
        workdir = params.cwd or tempfile.mkdtemp(prefix="cellbox-" if params.keep_workdir else process.workdir_prefix())
        if lease >= 0:
            if params.cwd is None:
                os.chown(workdir, uid, uid)  # the session's own: its files are its uid's
            strict = ch.Strict(uid=uid, gid=uid, workdir=os.path.realpath(workdir), network=params.network)
        limits = params.limits or m.Limits()
        limits = msgspec.structs.replace(
            limits,
            memory_mb=limits.memory_mb or o.memory_mb,
            cpu_seconds=limits.cpu_seconds or o.cpu_seconds,
        )
        settings = Settings(
            timeout=o.timeout if limits.timeout is None else limits.timeout,
            grace=o.kill_grace,
            output_bytes=limits.output_bytes or o.output_bytes,
            limits=limits,
            detection=params.detection,
            ast_cache_size=o.ast_cache_size,
            cwd=workdir,
            env=strict_env(params.env) if strict is not None else params.env,
            strict=strict,
        )
        sid = os.urandom(6).hex()
        session = Session(
            sid, params.name, settings, starter=self._starter, outlet=self._outlet, stats=self.stats, tg=self.tg
        )
        if lease >= 0:
            session.leases.append(lease)
        session.workdir = workdir
        session.workdir_fd = files.open_root(workdir)
        session.owns_workdir = params.cwd is None and not params.keep_workdir
        self.sessions[sid] = session  # listed from now on
        if params.name is not None:
            self._names[params.name] = session
        try:
            try:
                await session.start()
            except errors.SessionNotFound:
                if self.stopping:  # the server began to exit while the child started
                    raise errors.ShuttingDown(data="the server is exiting") from None
                raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close_session(session)
            raise
        self.stats.created += 1
        self._counted.add(sid)
        return session

    async def close_session(self, session: Session, cause: str = "closed") -> None:
        """Close ``session`` (once: a second close of it returns at once)."""
        if session.id not in self.sessions:
            return
        del self.sessions[session.id]
        if session.name is not None and self._names.get(session.name) is session:
            del self._names[session.name]
        if session.id in self._counted:  # a session that never started is counted in neither
            self._counted.discard(session.id)
            self.stats.closed += 1
        await session.close(cause)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_release_workdir, session)

    async def close_all(self) -> None:
        async with anyio.create_task_group() as tg:
            for session in list(self.sessions.values()):
                tg.start_soon(self.close_session, session)
