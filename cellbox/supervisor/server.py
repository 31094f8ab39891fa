"""``cellbox serve``: JSON-RPC over stdio, sessions in child processes.

Theory of operation: one anyio task group holds the stdin reader, the stdout writer, the
reaper, one worker per session and one task per request. The reader feeds bytes to the framer
and each body to the dispatcher (``protocol/``); requests become tasks, so a slow request never
delays another; ``session/eval`` enqueues on its session *before* its first await, so evals on
one session keep arrival order. Every reply and notification goes through ``outbox``
(``outbox.py``): written at once when nothing is queued, else queued for its writer task, with a
high-water mark that the readers of stdin, the children's pipes and their channels respect:
above it they stop reading until the client has read enough.

Invariants: every request gets exactly one reply (except one named by MCP's
``notifications/cancelled``, which gets none); an exception in a handler becomes -32603 and the
server keeps running; stdout carries protocol bytes only; on stdin EOF, ``exit``, SIGTERM or
SIGINT stdin is no longer read, every request already read is answered (closing the sessions
answers their evals), and only then is everything closed (no child or descendant survives) and
the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Any, Callable

import anyio

from cellbox.protocol import errors, jsonrpc
from cellbox.protocol import messages as m
from cellbox.protocol.framing import AutoFramer, FrameError
from cellbox.supervisor import process
from cellbox.supervisor.cgroups import Cgroups
from cellbox.supervisor.child import Reaper
from cellbox.supervisor.launcher import Launcher
from cellbox.supervisor.methods import Facts, Methods, table
from cellbox.supervisor.outbox import Outbox, pollable
from cellbox.supervisor.registry import Registry, ServeOptions, request_key
from cellbox.supervisor.stats import Stats
from cellbox.supervisor.zygote import Zygote

if TYPE_CHECKING:  # imported when first used: ``initialize`` must not wait for them
    from cellbox.supervisor.mcp import McpFace

log = logging.getLogger("cellbox.supervisor")

DRAIN_TIMEOUT = 10.0  # at exit: how long requests already read may take to be answered
HELPERS_DELAY = 0.2  # s after start: the zygote and warm pool start even if no request came


class Server:
    def __init__(self, options: ServeOptions | None = None) -> None:
        self.options = options or ServeOptions()
        self.stats = Stats()
        self.reaper = Reaper()
        #: Why sessions are not contained in PID namespaces (None: they are, when forked by
        #: the zygote).
        self.uncontained = (
            process.containment_unavailable() if self.options.containment else "turned off (--no-containment)"
        )
        if self.uncontained is None and not self.options.zygote:
            self.uncontained = "needs the zygote (--no-zygote was given)"
        self.zygote = Zygote(self.reaper, contain=self.uncontained is None) if self.options.zygote else None
        self.cgroups: Cgroups | None = None  # found when it serves
        self.no_cgroups: str | None = "turned off (--no-containment)"
        self.dispatcher = jsonrpc.Dispatcher()
        self.framer = AutoFramer(forced=self.options.framing)
        self.shutting_down = False
        self.exit_code = 0
        self._inflight: dict[Any, anyio.CancelScope] = {}
        self._silenced: set[Any] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self.stopping = False  # stdin EOF, ``exit`` or a signal: answering what was read, then exit
        self._read_scope: anyio.CancelScope | None = None  # the stdin reader's, once it runs
        self._unanswered = 0  # requests read and not answered yet
        self._answered: anyio.Event | None = None  # made by ``_all_answered``, set at 0
        self._stop = anyio.Event()
        #: Replies and notifications on their way to stdout. Readers of the children's output
        #: pipes await ``outbox.wait_writable()`` before each read (back-pressure).
        self.outbox = Outbox(on_broken=self._stop.set)
        self.launcher = Launcher(
            self.reaper, zygote=self.zygote, gate=self.outbox, warm=self.options.warm, before=self._start_helpers,
        )
        self._helpers_started = False  # the zygote and the warm pool (see ``_start_helpers``)
        self.registry = Registry(self.options, self.stats, starter=self.launcher, outlet=self)
        facts = Facts(
            framing=lambda: self.framer.kind,
            zygote=lambda: self.zygote is not None and self.zygote.enabled,
            on_shutdown=self._on_shutdown,
            isolation=self.isolation,
        )
        self.mcp = _LazyMcp(self.registry, self.notify)
        self._handlers = table(Methods(self.registry, facts), self.mcp)

    def isolation(self) -> dict:
        """``capabilities.cellbox.isolation``: the mechanisms active for new sessions."""
        active = self.uncontained is None and self.zygote is not None and self.zygote.enabled
        containment = ["pidns"] if active else []
        if self.cgroups is not None:
            containment.append("cgroup1")
        strict_missing = self.registry.strict_missing()
        strict = [] if strict_missing else ["userns", "netns", "mountns", "landlock", "seccomp"]
        report: dict = {"containment": containment, "strict": strict, "default": self.options.isolation}
        missing = {}
        if strict_missing:
            missing["strict"] = "; ".join(strict_missing)
        if not active:
            missing["pidns"] = self.uncontained or "the zygote is not running"
        if self.cgroups is None:
            missing["cgroup"] = self.no_cgroups
        if missing:
            report["missing"] = missing
        return report

    def _on_shutdown(self) -> None:
        self.shutting_down = self.registry.stopping = True

    # -- main ------------------------------------------------------------------------------

    async def serve(self, stdin: int = 0, stdout: int = 1) -> int:
        """Serve until stdin EOF, ``exit`` or a termination signal; return the exit code."""
        if self.options.containment:
            self.cgroups, self.no_cgroups = Cgroups.detect()
            self.launcher.cgroups = self.cgroups
        async with anyio.create_task_group() as tg:
            self._tg = self.registry.tg = tg
            tg.start_soon(self.reaper.run)
            tg.start_soon(self.outbox.run, stdout)
            tg.start_soon(self._signals)
            tg.start_soon(self._read_loop, stdin)
            self.launcher.pool.begin(tg)
            tg.start_soon(self._start_helpers_soon)
            await self._stop.wait()
            with anyio.CancelScope(shield=True):
                await self._shutdown()
            tg.cancel_scope.cancel()
        return self.exit_code

    def _start_helpers(self) -> None:
        """Start the zygote and fill the warm pool, in the background; called once, when the
        first reply has been written (so starting them does not slow it down) or when a
        child is first needed, whichever comes first."""
        if self._helpers_started or self.stopping:
            return
        self._helpers_started = True
        assert self._tg is not None
        if self.zygote is not None:
            self.zygote.start(self._tg)
        self.launcher.pool.kick()

    async def _start_helpers_soon(self) -> None:
        """Start the helpers after ``HELPERS_DELAY`` even if the client stays silent."""
        await anyio.sleep(HELPERS_DELAY)
        self._start_helpers()

    async def _shutdown(self) -> None:
        """Answer every request already read, then close everything.

        Stdin is no longer read. Closing the sessions answers their evals (``killed``, cause
        ``closed``); a ``session/create`` in flight sees its session closed and answers
        -32013. Requests still unanswered after ``DRAIN_TIMEOUT`` are cancelled (-32800).
        The reaper keeps running until the end: a child being killed must be reaped.
        """
        self.stopping = self.registry.stopping = True
        if self._read_scope is not None:
            self._read_scope.cancel()
        await self.launcher.pool.close()
        with anyio.move_on_after(DRAIN_TIMEOUT):
            await self.registry.close_all()
            await self._all_answered()
        for scope in list(self._inflight.values()):
            scope.cancel()
        with anyio.move_on_after(DRAIN_TIMEOUT):
            await self._all_answered()
        if self._unanswered:
            log.error("%d requests left unanswered at exit", self._unanswered)
        await self.registry.close_all()
        if self.zygote is not None:
            await self.zygote.close()
        if self.cgroups is not None:
            self.cgroups.close()
        await self._flush()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                log.info("signal %s: closing every session and exiting", sig)
                self.exit_code = 0
                self._stop.set()

    async def _read_loop(self, fd: int) -> None:
        with anyio.CancelScope() as self._read_scope:
            await self._read(fd)

    async def _read(self, fd: int) -> None:
        if not pollable(fd):  # a regular file: read it in a thread
            while True:
                try:
                    data = await anyio.to_thread.run_sync(os.read, fd, 1 << 16, abandon_on_cancel=True)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if self._take(data):
                    return
                await self.outbox.wait_writable()
        # A reader callback registered once: a request is handled (an eval written to its
        # child) from the loop's own call, with no task switch and no epoll change per read.
        loop = asyncio.get_running_loop()
        ended = anyio.Event()

        def readable() -> None:
            try:
                data = os.read(fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if self._take(data):
                loop.remove_reader(fd)
                ended.set()
            elif self.outbox.paused:
                # The client is not reading its replies: stop reading its requests until it
                # does, so replies cannot pile up without bound.
                loop.remove_reader(fd)
                self.outbox.when_open(resume)

        def resume() -> None:
            if not ended.is_set():
                loop.add_reader(fd, readable)

        loop.add_reader(fd, readable)
        try:
            await ended.wait()
        finally:
            ended.set()  # a pending ``resume`` must not read again
            loop.remove_reader(fd)

    def _take(self, data: bytes) -> bool:
        """Feed what stdin gave (``b""``: its end); True once reading must stop."""
        if not data:
            for item in self.framer.close():
                self._receive(item)
            log.info("stdin closed: closing every session and exiting")
            self._stop.set()
            return True
        for item in self.framer.feed(data):
            if self._receive(item):
                self._stop.set()
                return True
        return False

    def _receive(self, item: bytes | FrameError) -> bool:
        """Handle one framed message; True if the stream cannot go on."""
        if isinstance(item, FrameError):
            self.send(jsonrpc.encode_error(None, errors.ParseError(data=item.message)))
            return item.fatal
        match self.dispatcher.receive(item):
            case jsonrpc.Request() as req:
                self._start_request(req, self._reply)
            case bytes() as reply:  # an error reply the dispatcher made
                self.send(reply)
            case jsonrpc.Notification() as note:
                self._notification(note)
            case jsonrpc.Batch() as batch:
                self._batch(batch)
        return False

    # -- output ----------------------------------------------------------------------------

    def _reply(self, body: bytes | None) -> None:
        if body is not None:
            self.send(body)

    def send(self, body: bytes) -> None:
        """Frame ``body`` and send it (see ``Outbox.send``: never blocks, never drops)."""
        self.outbox.send(self.framer.frame(body))
        if not self._helpers_started:
            self._start_helpers()

    async def _flush(self) -> None:
        """Wait (a bounded time) until every queued message has been written."""
        await self.outbox.flush(2.0)

    def notify(self, method: str, params: Any) -> None:
        self.send(jsonrpc.encode_notification(method, params))

    # The sessions' outlet (``session.Outlet``).

    def output(self, session: str, request_id: Any, stream: str, text: str) -> None:
        self.notify(
            "session/output",
            m.OutputNotification(session=session, request_id=request_id, stream=stream, text=text),  # type: ignore[arg-type]
        )

    def display(self, session: str, request_id: Any, display: m.Display) -> None:
        self.notify(
            "session/display",
            m.DisplayNotification(
                session=session, request_id=request_id, data=display.data, metadata=display.metadata or None
            ),
        )

    def input_request(self, session: str, request_id: Any, prompt: str, password: bool, prompt_id: int) -> None:
        self.notify(
            "session/inputRequest",
            m.InputRequestNotification(
                session=session, request_id=request_id, prompt=prompt, password=password, prompt_id=prompt_id
            ),
        )

    # -- requests --------------------------------------------------------------------------

    def _start_request(self, req: jsonrpc.Request, reply: Callable[[bytes | None], None]) -> None:
        """Start a request; ``reply`` is called once with its reply body (None: no reply)."""
        assert self._tg is not None
        if self.stopping:
            reply(jsonrpc.encode_error(req.raw_id, errors.ShuttingDown(data="the server is exiting")))
            return
        reply = self._counted(reply)
        if req.method == "session/eval" and not self.shutting_down:
            # The hot path: enqueued now, before any await, so evals on a session keep arrival
            # order; no task per eval: the reply goes out when the eval is answered.
            try:
                session = self.registry.session(req.params.session)
            except errors.CellboxError as exc:
                reply(jsonrpc.encode_error(req.raw_id, exc))
                return
            ev = self.registry.submit_eval(session, request_key(req.id), req.id, req.params)
            ev.on_answer.append(lambda ev: reply(None if ev.no_reply else jsonrpc.encode_result(req.raw_id, ev.result)))
            return
        scope = anyio.CancelScope()
        self._inflight[request_key(req.id)] = scope
        self._tg.start_soon(self._run_request, req, scope, reply)

    def _counted(self, reply: Callable[[bytes | None], None]) -> Callable[[bytes | None], None]:
        """``reply``, counted in ``_unanswered`` until it is called (once)."""
        self._unanswered += 1
        done = False

        def counted(body: bytes | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            self._unanswered -= 1
            if not self._unanswered and self._answered is not None:
                self._answered.set()
            reply(body)

        return counted

    async def _all_answered(self) -> None:
        """Return once every request read has been answered."""
        if self._unanswered:
            if self._answered is None or self._answered.is_set():
                self._answered = anyio.Event()
            await self._answered.wait()

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    async def _run_request(
        self, req: jsonrpc.Request, scope: anyio.CancelScope, reply: Callable[[bytes | None], None]
    ) -> None:
        key = request_key(req.id)
        body: bytes | None = None
        try:
            with scope:
                if self.shutting_down:
                    raise errors.ShuttingDown()
                result = await self._handlers[req.method](req.params, req)
                body = jsonrpc.encode_result(req.raw_id, result)
            if scope.cancelled_caught:
                body = jsonrpc.encode_error(req.raw_id, errors.RequestCancelled())
        except errors.CellboxError as exc:
            body = jsonrpc.encode_error(req.raw_id, exc)
        except Exception as exc:
            log.exception("internal error in %s", req.method)
            body = jsonrpc.encode_error(req.raw_id, errors.InternalError(data=f"{type(exc).__name__}: {exc}"))
        finally:
            if self._inflight.get(key) is scope:
                del self._inflight[key]
        if key in self._silenced:
            self._silenced.discard(key)
            body = None
        reply(body)

    def _batch(self, batch: jsonrpc.Batch) -> None:
        """Answer a batch with one array once every request in it has its reply."""
        bodies: list[bytes] = []
        requests = [item for item in batch.items if isinstance(item, jsonrpc.Request)]
        left = len(requests)

        def collect(body: bytes | None) -> None:
            nonlocal left
            if body is not None:
                bodies.append(body)
            left -= 1
            if left == 0 and bodies:
                self.send(jsonrpc.encode_batch(bodies))

        for item in batch.items:
            match item:
                case bytes():
                    bodies.append(item)
                case jsonrpc.Notification():
                    self._notification(item)
        for req in requests:
            self._start_request(req, collect)
        if not requests and bodies:
            self.send(jsonrpc.encode_batch(bodies))

    # -- notifications ---------------------------------------------------------------------

    def _notification(self, note: jsonrpc.Notification) -> None:
        method, params = note.method, note.params
        if method == "exit":
            self.exit_code = 0 if self.shutting_down else 1
            self._stop.set()
        elif method == "$/cancelRequest":
            self._cancel(request_key(params.id), silent=False)
        elif method == "notifications/cancelled":
            self._cancel(request_key(params.request_id), silent=True)

    def _cancel(self, key: Any, *, silent: bool) -> None:
        """Cancel the request ``key``: an eval is interrupted (or dropped if queued)."""
        found = self.registry.evals.get(key)
        if found is not None:
            session, pe = found
            if silent:
                pe.no_reply = True
            session.interrupt(pe)
            return
        scope = self._inflight.get(key)
        if scope is not None:
            if silent:
                self._silenced.add(key)
            scope.cancel()



class _LazyMcp:
    """The MCP face, imported on first use: its tool schemas are built at import, which
    ``initialize`` should not wait for. Attributes not defined here are the face's."""

    def __init__(self, registry: Registry, notify: Callable[[str, Any], None]) -> None:
        self._args = (registry, notify)
        self._face: McpFace | None = None

    def face(self) -> McpFace:
        if self._face is None:
            from cellbox.supervisor.mcp import McpFace

            self._face = McpFace(*self._args)
        return self._face

    async def tools_list(self, params: Any, req: Any) -> Any:
        return await self.face().tools_list(params, req)

    async def tools_call(self, params: Any, req: Any) -> Any:
        return await self.face().tools_call(params, req)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.face(), name)
